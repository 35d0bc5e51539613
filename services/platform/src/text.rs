//! Unicode hygiene for what people type: one canonical form for text that looks the same,
//! and no characters that cannot be seen.
//!
//! Two strings that render alike must not be two different claims or names: [`canonical`]
//! puts text into NFC, and [`check_visible`] refuses what a reader cannot see or that
//! reorders what they see — format characters (general category Cf: zero-width spaces and
//! joiners, bidi embeddings, overrides and isolates, the soft hyphen, the BOM), the other
//! default-ignorable code points (Hangul fillers, variation selectors outside emoji, …),
//! private-use and unassigned code points, and line or paragraph separators. Every service
//! parses addresses, names, positions, department names, mailbox and sender names with these.

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeEmoji, UnicodeGeneralCategory};

/// Why a character was refused, in words for the person who typed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invisible {
    #[error("contains an invisible character (U+{0:04X}: zero-width, filler or format character); retype it without")]
    Invisible(u32),
    #[error("contains a text-direction control character (U+{0:04X}), which can disguise what is shown; retype it without")]
    Bidi(u32),
    #[error("contains a private-use or unassigned character (U+{0:04X})")]
    Unassigned(u32),
    #[error("contains a line break or control character")]
    Control,
}

/// Where text is used: names may keep a zero-width (non-)joiner where a script needs it
/// (after a virama, RFC 5892's CONTEXTJ rule); addresses never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Name,
    Address,
}

/// Text in NFC, the form Mailroom stores and compares.
pub fn canonical(input: &str) -> String {
    input.nfc().collect()
}

/// Refuses characters a reader cannot see (see the module docs).
pub fn check_visible(input: &str, usage: Use) -> Result<(), Invisible> {
    let mut previous: Option<char> = None;
    for c in input.chars() {
        check_char(c, previous, usage)?;
        previous = Some(c);
    }
    Ok(())
}

fn check_char(c: char, previous: Option<char>, usage: Use) -> Result<(), Invisible> {
    let code = c as u32;
    if is_bidi_control(code) {
        return Err(Invisible::Bidi(code));
    }
    if matches!(c, '\u{200C}' | '\u{200D}') {
        let after_virama = previous.is_some_and(|p| canonical_combining_class(p) == 9);
        let after_emoji = c == '\u{200D}' && previous.is_some_and(is_emoji_part);
        return if usage == Use::Name && (after_virama || after_emoji) {
            Ok(())
        } else {
            Err(Invisible::Invisible(code))
        };
    }
    if matches!(c, '\u{FE0E}' | '\u{FE0F}') {
        // Text or emoji presentation of the emoji before it.
        return if usage == Use::Name && previous.is_some_and(is_pictographic) {
            Ok(())
        } else {
            Err(Invisible::Invisible(code))
        };
    }
    match c.general_category() {
        GeneralCategory::Control
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator => return Err(Invisible::Control),
        GeneralCategory::Format => return Err(Invisible::Invisible(code)),
        GeneralCategory::PrivateUse | GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            return Err(Invisible::Unassigned(code))
        }
        _ => {}
    }
    if is_default_ignorable(code) || code == 0x2800 {
        return Err(Invisible::Invisible(code));
    }
    Ok(())
}

/// A pictographic emoji (digits, `#` and `*` are "emoji characters" too, for keycaps; a
/// joiner or selector after them would hide in plain text).
fn is_pictographic(c: char) -> bool {
    !c.is_ascii() && c.is_emoji_char()
}

fn is_emoji_part(c: char) -> bool {
    is_pictographic(c) || matches!(c, '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}')
}

fn is_bidi_control(code: u32) -> bool {
    matches!(code, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069)
}

/// Default_Ignorable_Code_Point (DerivedCoreProperties.txt) beyond general category Cf.
fn is_default_ignorable(code: u32) -> bool {
    matches!(
        code,
        0x034F
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_and_nfd_forms_become_one() {
        assert_eq!(canonical("jose\u{301}"), canonical("jos\u{e9}"));
        assert_eq!(canonical("jose\u{301}"), "jos\u{e9}");
    }

    #[test]
    fn invisible_and_direction_characters_are_refused() {
        for bad in [
            "ann\u{200B}lee",
            "ann\u{FEFF}",
            "evil\u{202E}gpj.exe",
            "a\u{2066}b",
            "soft\u{AD}hyphen",
            "filler\u{3164}",
            "vs\u{FE0F}",
            "private\u{E000}",
            "line\u{2028}break",
            "blank\u{2800}",
            "tag\u{E0041}",
            "7\u{FE0F}",
            "1\u{200D}2",
        ] {
            assert!(check_visible(bad, Use::Name).is_err(), "{bad:?} accepted");
            assert!(
                check_visible(bad, Use::Address).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn ordinary_names_in_any_script_pass() {
        for good in [
            "Anne-Marie O'Neil",
            "Иван Петров",
            "李小龍",
            "José Ñúñez",
            "श्रीमती",     // Devanagari with virama
            "ක්\u{200D}ර", // Sinhala: ZWJ after a virama forms a conjunct
            "Ann \u{2764}\u{FE0F}",
            "👩\u{200D}💻 Lee",
        ] {
            assert_eq!(check_visible(good, Use::Name), Ok(()), "{good:?} refused");
        }
        assert!(check_visible("ක්\u{200D}ර", Use::Address).is_err());
    }
}
