//! English and Russian: which one a request gets, and the Fluent bundles that say each
//! sentence (Russian plurals one/few/many included). Each page part keeps its sentences in
//! its own `.ftl` file; every key exists in both languages (a unit test says which do not).

use std::collections::HashMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Locale {
    #[default]
    En,
    Ru,
}

/// The `.ftl` files, by part, in both languages.
const FILES: &[(&str, &str, &str)] = &[
    (
        "common",
        include_str!("../locales/en/common.ftl"),
        include_str!("../locales/ru/common.ftl"),
    ),
    (
        "auth",
        include_str!("../locales/en/auth.ftl"),
        include_str!("../locales/ru/auth.ftl"),
    ),
    (
        "mailboxes",
        include_str!("../locales/en/mailboxes.ftl"),
        include_str!("../locales/ru/mailboxes.ftl"),
    ),
    (
        "mail",
        include_str!("../locales/en/mail.ftl"),
        include_str!("../locales/ru/mail.ftl"),
    ),
    (
        "invitations",
        include_str!("../locales/en/invitations.ftl"),
        include_str!("../locales/ru/invitations.ftl"),
    ),
    (
        "people",
        include_str!("../locales/en/people.ftl"),
        include_str!("../locales/ru/people.ftl"),
    ),
    (
        "access",
        include_str!("../locales/en/access.ftl"),
        include_str!("../locales/ru/access.ftl"),
    ),
];

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::Ru];

    /// The language tag (`<html lang>`, the `lang` cookie).
    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ru => "ru",
        }
    }

    /// `en`/`ru` (and `en-GB`, `ru-RU`…); anything else is not ours.
    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Locale::En),
            "ru" => Some(Locale::Ru),
            _ => None,
        }
    }

    /// The first of ours in an `Accept-Language` header, by its q-values.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut offered: Vec<(f32, usize, Locale)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut pieces = part.split(';');
                let locale = Locale::parse(pieces.next()?)?;
                let q = pieces
                    .find_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, i, locale))
            })
            .collect();
        offered.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offered.first().map(|o| o.2)
    }

    fn bundle(self) -> &'static FluentBundle<FluentResource> {
        static BUNDLES: OnceLock<HashMap<Locale, FluentBundle<FluentResource>>> = OnceLock::new();
        let bundles = BUNDLES.get_or_init(|| {
            Locale::ALL
                .iter()
                .map(|&locale| (locale, build_bundle(locale)))
                .collect()
        });
        &bundles[&self]
    }

    /// Whether `key` has a sentence.
    pub fn has(self, key: &str) -> bool {
        self.bundle().has_message(key)
    }

    /// The sentence `key` says in this language; the key itself when missing (a unit test
    /// makes sure none is).
    pub fn t(self, key: &str) -> String {
        self.format(key, None)
    }

    /// The sentence `key` with its arguments (`{ $count }`), numbers choosing the plural form.
    pub fn t_args(self, key: &str, args: &[(&str, Arg<'_>)]) -> String {
        let mut fluent = FluentArgs::new();
        for (name, value) in args {
            match value {
                Arg::Num(n) => fluent.set(*name, FluentValue::from(*n)),
                Arg::Str(s) => fluent.set(*name, FluentValue::from(s.to_string())),
            }
        }
        self.format(key, Some(&fluent))
    }

    fn format(self, key: &str, args: Option<&FluentArgs<'_>>) -> String {
        let bundle = self.bundle();
        let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) else {
            tracing::warn!(key, locale = self.tag(), "no translation");
            return key.to_owned();
        };
        let mut errors = Vec::new();
        bundle
            .format_pattern(pattern, args, &mut errors)
            .into_owned()
    }
}

/// An argument of a sentence.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Num(i64),
    Str(&'a str),
}

fn build_bundle(locale: Locale) -> FluentBundle<FluentResource> {
    let langid: unic_langid::LanguageIdentifier = locale.tag().parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![langid]);
    // Isolation marks would show up inside attributes and copied text.
    bundle.set_use_isolating(false);
    for (part, en, ru) in FILES {
        let source = match locale {
            Locale::En => en,
            Locale::Ru => ru,
        };
        match FluentResource::try_new((*source).to_owned()) {
            Ok(resource) => {
                if let Err(errors) = bundle.add_resource(resource) {
                    tracing::error!(part, ?errors, "duplicate translation keys");
                }
            }
            Err((_, errors)) => tracing::error!(part, ?errors, "translations do not parse"),
        }
    }
    bundle
}

/// The keys of one `.ftl` source (messages only, not terms).
pub fn keys_of(source: &str) -> Vec<String> {
    source
        .lines()
        .filter(|line| line.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .filter_map(|line| line.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_said_in_both_languages_and_parses() {
        for (part, en, ru) in FILES {
            for (lang, source) in [("en", en), ("ru", ru)] {
                if let Err((_, errors)) = FluentResource::try_new((*source).to_owned()) {
                    panic!("{lang}/{part}.ftl does not parse: {errors:?}");
                }
            }
            let en_keys: std::collections::BTreeSet<_> = keys_of(en).into_iter().collect();
            let ru_keys: std::collections::BTreeSet<_> = keys_of(ru).into_iter().collect();
            let only_en: Vec<_> = en_keys.difference(&ru_keys).collect();
            let only_ru: Vec<_> = ru_keys.difference(&en_keys).collect();
            assert!(
                only_en.is_empty() && only_ru.is_empty(),
                "{part}.ftl: only in English {only_en:?}, only in Russian {only_ru:?}"
            );
        }
    }

    #[test]
    fn russian_plurals_choose_one_few_many() {
        let say = |n| Locale::Ru.t_args("count-mailboxes", &[("count", Arg::Num(n))]);
        assert_eq!(say(1), "1 ящик");
        assert_eq!(say(3), "3 ящика");
        assert_eq!(say(5), "5 ящиков");
        assert_eq!(say(21), "21 ящик");
        assert_eq!(
            Locale::En.t_args("count-mailboxes", &[("count", Arg::Num(1))]),
            "1 mailbox"
        );
    }

    #[test]
    fn accept_language_picks_ours_by_quality() {
        assert_eq!(
            Locale::from_accept_language("de-DE,ru;q=0.8,en;q=0.5"),
            Some(Locale::Ru)
        );
        assert_eq!(
            Locale::from_accept_language("en-US,en;q=0.9"),
            Some(Locale::En)
        );
        assert_eq!(Locale::from_accept_language("fr, de"), None);
        assert_eq!(Locale::from_accept_language("ru;q=0, en"), Some(Locale::En));
    }
}
