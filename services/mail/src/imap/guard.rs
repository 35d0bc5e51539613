//! Bounded reads from an IMAP server: [`Guarded`] sits between the TCP or TLS stream and
//! async-imap and scans the IMAP framing as the bytes pass, so nothing a server sends is
//! buffered beyond the [`ReadLimits`] before it is refused.
//!
//! What is scanned ([`FrameScanner`], pure logic): a response is text lines, each ended by
//! CRLF; an untagged data line (`* 3 FETCH …`, `* LIST …`) ending in `{N}` or `{N+}` announces
//! a literal of N bytes that follows, after which the same response goes on. Status lines
//! (`OK`, `NO`, `BAD`, `BYE`, `PREAUTH`, tagged or not) and continuations (`+ …`) carry no
//! literal. What is written is scanned too ([`SentLines`]): a command line starts a command
//! (its tagged answer ends it), and its name says whether async-imap hands its answer over
//! one response at a time (FETCH, LIST, STORE, EXPUNGE, IDLE) or keeps all of it (the rest).
//!
//! Invariant: a read fails — before the offending bytes reach async-imap, which would size
//! its buffer for an announced literal at once — when one response's text passes
//! `max_line_bytes`, its literals together pass `max_literal_bytes`, one command is answered
//! with more than `max_responses` untagged responses, the answer to a command whose answer is
//! kept whole passes `max_kept_bytes`, or a command is not answered within
//! `command_deadline` (a server that sends a line every 59 s is not waiting for us). After a
//! failure every read fails the same way. The error is an `io::Error` carrying
//! [`LimitExceeded`] ([`LimitExceeded::of`] finds it again).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How much of a server's answer is read before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Text of one response outside its literals, CRLFs included.
    pub max_line_bytes: u64,
    /// Literal data of one response, all its literals together.
    pub max_literal_bytes: u64,
    /// Untagged and continuation responses answering one command.
    pub max_responses: u64,
    /// Bytes of the untagged responses answering one command whose answer async-imap keeps
    /// whole (CAPABILITY, EXAMINE, STATUS, SEARCH, …), and of those between commands.
    pub max_kept_bytes: u64,
    /// From a command's line sent to its tagged answer (IDLE: from DONE).
    pub command_deadline: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 1024 * 1024,
            max_literal_bytes: 25 * 1024 * 1024,
            max_responses: 2_000_000,
            max_kept_bytes: 1024 * 1024,
            command_deadline: Duration::from_secs(600),
        }
    }
}

/// Which limit a server's answer went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the server sent a response whose text is longer than {limit} bytes")]
    Line { limit: u64 },
    #[error(
        "the server announced {size} bytes of literal data in one response, more than the {limit} allowed"
    )]
    Literal { size: u64, limit: u64 },
    #[error("the server sent more than {limit} responses to one command")]
    Responses { limit: u64 },
    #[error("the server sent more than {limit} bytes in answer to one {command} command")]
    Kept { limit: u64, command: &'static str },
    #[error("the server did not finish answering one command within {} s", .after.as_secs())]
    Deadline { after: Duration },
    /// A status line whose text right after its `[code]` starts with a byte above 0x7F:
    /// the IMAP parser under async-imap (imap-proto 0.17) panics on it (found by fuzzing).
    #[error("the server sent a status line whose text after its response code is not IMAP text")]
    StatusText,
}

impl LimitExceeded {
    /// The limit's short name (`line`, `literal`, `responses`, `kept`, `deadline`), for a
    /// caller that names its own setting.
    pub fn name(&self) -> &'static str {
        match self {
            LimitExceeded::Line { .. } => "line",
            LimitExceeded::Literal { .. } => "literal",
            LimitExceeded::Responses { .. } => "responses",
            LimitExceeded::Kept { .. } => "kept",
            LimitExceeded::Deadline { .. } => "deadline",
            LimitExceeded::StatusText => "status-text",
        }
    }

    /// As an `io::Error` (a deadline is `TimedOut`, the rest `InvalidData`).
    pub fn into_io(self) -> io::Error {
        let kind = match self {
            LimitExceeded::Deadline { .. } => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// The limit an `io::Error` from a [`Guarded`] stream reports, if that is what it is.
    pub fn of(err: &io::Error) -> Option<LimitExceeded> {
        err.get_ref()?.downcast_ref::<LimitExceeded>().copied()
    }
}

/// How async-imap treats the answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandClass {
    /// Handed over one response at a time (FETCH, LIST, STORE, EXPUNGE): only counted.
    Streamed,
    /// IDLE: streamed, and no deadline until DONE is sent.
    Idle,
    /// Kept whole until the tagged answer (everything else, and what comes between
    /// commands): bounded in bytes too.
    Kept(&'static str),
}

impl CommandClass {
    /// The class of the command `name` (case-insensitive, after any `UID`).
    pub fn of(name: &[u8]) -> CommandClass {
        const STREAMED: [&str; 6] = ["FETCH", "LIST", "LSUB", "STORE", "EXPUNGE", "XLIST"];
        const KEPT: [&str; 11] = [
            "LOGIN",
            "CAPABILITY",
            "EXAMINE",
            "SELECT",
            "STATUS",
            "SEARCH",
            "GETQUOTAROOT",
            "NOOP",
            "LOGOUT",
            "STARTTLS",
            "ENABLE",
        ];
        if name.eq_ignore_ascii_case(b"IDLE") {
            return CommandClass::Idle;
        }
        if STREAMED
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
        {
            return CommandClass::Streamed;
        }
        let known = KEPT
            .iter()
            .find(|s| name.eq_ignore_ascii_case(s.as_bytes()))
            .copied();
        CommandClass::Kept(known.unwrap_or("other"))
    }
}

/// Where the scanner is in the server's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Line,
    Literal { left: u64 },
}

/// Recognises `{N}` / `{N+}` right before a line's CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Digits { n: u64, any: bool },
    Plus { n: u64 },
    Closed { n: u64 },
    ClosedCr { n: u64 },
}

impl Marker {
    fn push(self, b: u8) -> Marker {
        match (self, b) {
            (_, b'{') => Marker::Digits { n: 0, any: false },
            (Marker::Digits { n, .. }, b'0'..=b'9') => Marker::Digits {
                // Saturates: any number past u64 is over every limit anyway.
                n: n.saturating_mul(10).saturating_add(u64::from(b - b'0')),
                any: true,
            },
            (Marker::Digits { n, any: true }, b'+') => Marker::Plus { n },
            (Marker::Digits { n, any: true }, b'}') | (Marker::Plus { n }, b'}') => {
                Marker::Closed { n }
            }
            (Marker::Closed { n }, b'\r') => Marker::ClosedCr { n },
            _ => Marker::None,
        }
    }

    /// At a line's LF: the literal the line announced, if any.
    fn literal(self) -> Option<u64> {
        match self {
            Marker::ClosedCr { n } | Marker::Closed { n } => Some(n),
            _ => None,
        }
    }
}

/// The scan of what a server sends (no I/O): call [`FrameScanner::command_sent`] when the
/// client sends a command and [`FrameScanner::feed`] with every byte received, in order.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    limits: ReadLimits,
    mode: Mode,
    /// The next byte starts a response.
    at_start: bool,
    /// The response's first bytes (to tell `* OK` from `* 3 FETCH`).
    head: [u8; 12],
    head_len: usize,
    line_bytes: u64,
    literal_bytes: u64,
    marker: Marker,
    /// The command being answered (`None`: between commands).
    command: Option<CommandClass>,
    responses: u64,
    kept_bytes: u64,
    /// The line's first `]` was seen (the end of a status line's response code) …
    bracket_seen: bool,
    /// … and was the byte just before this one.
    after_bracket: bool,
}

impl FrameScanner {
    pub fn new(limits: ReadLimits) -> Self {
        Self {
            limits,
            mode: Mode::Line,
            at_start: true,
            head: [0; 12],
            head_len: 0,
            line_bytes: 0,
            literal_bytes: 0,
            marker: Marker::None,
            command: None,
            responses: 0,
            kept_bytes: 0,
            bracket_seen: false,
            after_bracket: false,
        }
    }

    /// The client sent a command of `class`: its answer is counted from here.
    pub fn command_sent(&mut self, class: CommandClass) {
        self.command = Some(class);
        self.responses = 0;
        self.kept_bytes = 0;
    }

    /// Whether a command awaits its tagged answer.
    pub fn command_outstanding(&self) -> bool {
        self.command.is_some()
    }

    /// Scans `bytes`, the next bytes from the server; an error names the limit they passed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        let mut i = 0;
        while i < bytes.len() {
            match self.mode {
                Mode::Literal { left } => {
                    let take = left.min((bytes.len() - i) as u64);
                    self.count_kept(take)?;
                    i += take as usize;
                    self.mode = match left - take {
                        0 => Mode::Line,
                        left => Mode::Literal { left },
                    };
                }
                Mode::Line if self.plain_run() => {
                    // The bulk of a line: bytes that change nothing but the counts (no line
                    // end, no literal's announcement, no status code's end) are counted
                    // together, as they would be one by one.
                    let watch_bracket = !self.bracket_seen && self.literal_bytes == 0;
                    // Never past the line limit: the byte that passes it is looked at alone,
                    // so whichever limit a byte-by-byte scan would meet first is met first.
                    let room = self.limits.max_line_bytes.saturating_sub(self.line_bytes);
                    let run = bytes[i..]
                        .iter()
                        .position(|&b| b == b'\n' || b == b'{' || (watch_bracket && b == b']'))
                        .unwrap_or(bytes.len() - i)
                        .min(usize::try_from(room).unwrap_or(usize::MAX));
                    if run == 0 {
                        self.feed_byte(bytes[i])?;
                        i += 1;
                        continue;
                    }
                    self.line_bytes += run as u64;
                    self.count_kept(run as u64)?;
                    i += run;
                }
                Mode::Line => {
                    self.feed_byte(bytes[i])?;
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// Whether the line's next bytes, up to a line end, `{` or (while one is looked for) a
    /// status code's `]`, only add to its counts: the response's start and head are read,
    /// no `]` was just passed, and no `{N}` is being read.
    fn plain_run(&self) -> bool {
        !self.at_start
            && !self.after_bracket
            && self.marker == Marker::None
            && (self.head_len == self.head.len() || self.literal_bytes > 0)
    }

    /// One byte of a line, looked at alone.
    fn feed_byte(&mut self, b: u8) -> Result<(), LimitExceeded> {
        if self.at_start {
            self.at_start = false;
            self.head_len = 0;
            self.line_bytes = 0;
            self.literal_bytes = 0;
            self.marker = Marker::None;
            self.bracket_seen = false;
            self.after_bracket = false;
        }
        if self.head_len < self.head.len() && self.literal_bytes == 0 {
            self.head[self.head_len] = b;
            self.head_len += 1;
        }
        self.line_bytes += 1;
        if self.line_bytes > self.limits.max_line_bytes {
            return Err(LimitExceeded::Line {
                limit: self.limits.max_line_bytes,
            });
        }
        self.count_kept(1)?;
        if std::mem::take(&mut self.after_bracket) && b >= 0x80 && self.is_status_line() {
            return Err(LimitExceeded::StatusText);
        }
        if b == b']' && !self.bracket_seen && self.literal_bytes == 0 {
            self.bracket_seen = true;
            self.after_bracket = true;
        }
        if b == b'\n' {
            self.line_end()?;
        } else {
            self.marker = self.marker.push(b);
        }
        Ok(())
    }

    fn line_end(&mut self) -> Result<(), LimitExceeded> {
        // A `{N}` at the end of any line announces a literal of the same response, as the
        // parser under async-imap reads it — a status line's response code included
        // (`NO [BADCHARSET ({900}` … `{900}` …), which the grammar does not allow but the
        // parser takes (found by fuzzing). So the framing here is the parser's, and every
        // literal of one response counts toward one limit.
        let announced = self.marker.literal();
        self.marker = Marker::None;
        match announced {
            Some(size) => {
                let total = self.literal_bytes.saturating_add(size);
                if total > self.limits.max_literal_bytes {
                    return Err(LimitExceeded::Literal {
                        size: total,
                        limit: self.limits.max_literal_bytes,
                    });
                }
                self.literal_bytes = total;
                if size > 0 {
                    self.mode = Mode::Literal { left: size };
                }
                Ok(())
            }
            None => self.response_end(),
        }
    }

    fn response_end(&mut self) -> Result<(), LimitExceeded> {
        self.at_start = true;
        if self.is_untagged() {
            self.responses += 1;
            if self.responses > self.limits.max_responses {
                return Err(LimitExceeded::Responses {
                    limit: self.limits.max_responses,
                });
            }
        } else {
            // A tagged answer ends the command.
            self.command = None;
            self.responses = 0;
            self.kept_bytes = 0;
        }
        Ok(())
    }

    /// Whether the line is a status response, a tagged line (whatever its tag's length) or a
    /// continuation — every line but untagged data (`* 3 FETCH`, `* LIST`), whose text after
    /// a response code the parser slices by one byte.
    fn is_status_line(&self) -> bool {
        let head = &self.head[..self.head_len];
        let Some(rest) = head.strip_prefix(b"* ") else {
            return true;
        };
        let word = rest
            .split(|b| *b == b' ' || *b == b'[' || *b == b'\r')
            .next()
            .unwrap_or_default();
        ["OK", "NO", "BAD", "BYE", "PREAUTH"]
            .iter()
            .any(|s| word.eq_ignore_ascii_case(s.as_bytes()))
    }

    fn is_untagged(&self) -> bool {
        matches!(self.head.first(), Some(b'*' | b'+')) && self.head_len > 0
    }

    fn count_kept(&mut self, n: u64) -> Result<(), LimitExceeded> {
        let command = match self.command {
            Some(CommandClass::Kept(name)) => name,
            None => "unrequested",
            Some(CommandClass::Streamed | CommandClass::Idle) => return Ok(()),
        };
        // Only untagged responses are kept; the tagged line is bounded as a line.
        if !self.is_untagged() {
            return Ok(());
        }
        self.kept_bytes += n;
        if self.kept_bytes > self.limits.max_kept_bytes {
            return Err(LimitExceeded::Kept {
                limit: self.limits.max_kept_bytes,
                command,
            });
        }
        Ok(())
    }
}

/// What the client sent, line by line: which command started, or DONE (the end of IDLE).
#[derive(Debug, Clone, Default)]
pub struct SentLines {
    /// The line's first words (tag, command, one more), never past the third space, so a
    /// password later on a LOGIN line is never held.
    start: [u8; 32],
    len: usize,
    spaces: u8,
    full: bool,
}

/// A line the client finished sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Command(CommandClass),
    Done,
}

impl SentLines {
    /// Scans `bytes` as sent; `on_line` hears of each line they finish.
    pub fn wrote(&mut self, bytes: &[u8], mut on_line: impl FnMut(Sent)) {
        for &b in bytes {
            if b == b'\n' {
                if let Some(sent) = self.classify() {
                    on_line(sent);
                }
                *self = SentLines::default();
                continue;
            }
            if self.full || b == b'\r' {
                continue;
            }
            if b == b' ' {
                self.spaces += 1;
                if self.spaces >= 3 {
                    self.full = true;
                    continue;
                }
            }
            if self.len == self.start.len() {
                self.full = true;
                continue;
            }
            self.start[self.len] = b;
            self.len += 1;
        }
    }

    fn classify(&self) -> Option<Sent> {
        let line = &self.start[..self.len];
        let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
        let first = words.next()?;
        let Some(mut name) = words.next() else {
            return first.eq_ignore_ascii_case(b"DONE").then_some(Sent::Done);
        };
        if name.eq_ignore_ascii_case(b"UID") {
            name = words.next().unwrap_or_default();
        }
        Some(Sent::Command(CommandClass::of(name)))
    }
}

/// A stream whose reads are bounded by [`ReadLimits`] (see the module's invariant).
pub struct Guarded<S> {
    inner: S,
    scanner: FrameScanner,
    sent: SentLines,
    deadline_after: Duration,
    /// Armed while a command (other than IDLE before DONE) awaits its answer.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    failed: Option<LimitExceeded>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, limits: ReadLimits) -> Self {
        Self {
            inner,
            scanner: FrameScanner::new(limits),
            sent: SentLines::default(),
            deadline_after: limits.command_deadline,
            timer: None,
            armed: false,
            failed: None,
        }
    }

    /// The stream underneath (for STARTTLS: TLS goes over it, and a new guard over TLS).
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn arm(&mut self) {
        let Some(at) = Instant::now().checked_add(self.deadline_after) else {
            self.armed = false;
            return;
        };
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
    }

    fn fail(&mut self, limit: LimitExceeded) -> io::Error {
        self.failed = Some(limit);
        limit.into_io()
    }
}

impl<S> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("limits", &self.scanner.limits)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(limit) = this.failed {
            return Poll::Ready(Err(limit.into_io()));
        }
        // Checked at every read, so a server that never pauses is held to it as well.
        if this.armed
            && this
                .timer
                .as_ref()
                .is_some_and(|t| t.deadline() <= Instant::now())
        {
            let after = this.deadline_after;
            return Poll::Ready(Err(this.fail(LimitExceeded::Deadline { after })));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let scanned = this.scanner.feed(&buf.filled()[before..]);
                if let Err(limit) = scanned {
                    // Nothing of this read reaches the reader.
                    buf.set_filled(before);
                    return Poll::Ready(Err(this.fail(limit)));
                }
                if !this.scanner.command_outstanding() {
                    this.armed = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.armed {
                    if let Some(timer) = &mut this.timer {
                        if timer.as_mut().poll(cx).is_ready() {
                            let after = this.deadline_after;
                            return Poll::Ready(Err(this.fail(LimitExceeded::Deadline { after })));
                        }
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        let mut events = Vec::new();
        this.sent.wrote(&buf[..written], |sent| events.push(sent));
        for sent in events {
            match sent {
                Sent::Command(CommandClass::Idle) => {
                    this.scanner.command_sent(CommandClass::Idle);
                    this.armed = false;
                }
                Sent::Command(class) => {
                    this.scanner.command_sent(class);
                    this.arm();
                }
                Sent::Done => {
                    if this.scanner.command_outstanding() {
                        this.arm();
                    }
                }
            }
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ReadLimits {
        ReadLimits {
            max_line_bytes: 100,
            max_literal_bytes: 1_000,
            max_responses: 5,
            max_kept_bytes: 300,
            command_deadline: Duration::from_secs(60),
        }
    }

    fn fetching() -> FrameScanner {
        let mut s = FrameScanner::new(limits());
        s.command_sent(CommandClass::Streamed);
        s
    }

    #[test]
    fn ordinary_answers_pass_in_any_chunking() {
        let answer: &[u8] = b"* 1 FETCH (UID 7 BODY[] {11}\r\nhello\r\nworld FLAGS (\\Seen))\r\n\
            * OK [ALERT] note {5}\r\n* 2 EXISTS\r\na1 OK done\r\n";
        let mut whole = fetching();
        whole.feed(answer).unwrap();
        assert!(!whole.command_outstanding());
        for size in [1, 2, 3, 7] {
            let mut s = fetching();
            for chunk in answer.chunks(size) {
                s.feed(chunk).unwrap();
            }
            assert!(!s.command_outstanding(), "chunks of {size}");
        }
    }

    /// Whatever the chunking, the scan ends the same: what a long line's bulk is counted
    /// together with is what its bytes one by one would come to.
    #[test]
    fn any_chunking_scans_the_same() {
        let pieces: [&[u8]; 12] = [
            b"* 1 FETCH (UID 7 FLAGS (\\Seen) ENVELOPE (\"Mon, 1 Jan 2024\" {5}\r\nhello",
            b" NIL NIL))\r\n",
            b"* OK [UIDNEXT 9] predicted next UID of a very long status line\r\n",
            b"* NO [ALERT]\xC3\xA9 not IMAP text\r\n",
            b"* 2 FETCH (UID 8 BODY[] {0}\r\n)\r\n",
            b"* 3 FETCH (UID 9 RFC822.SIZE 1234 INTERNALDATE \"06-Dec-2026 07:03:17 +0000\")\r\n",
            b"* 4 FETCH (X {12+}\r\n0123456789ab)\r\n",
            b"a1 OK [READ-ONLY]\xFF done\r\n",
            b"* 5 FETCH (UID 10 ENVELOPE (NIL \"a]b{c}d\" {3}\r\n]{1\r\n))\r\n",
            b"* 6 FETCH (UID 11 FLAGS ())\r\n",
            b"* 7 FETCH (UID 12 X {2000}\r\n",
            b"* SEARCH 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27\r\n",
        ];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..300 {
            let answer: Vec<u8> = (0..next(8) + 1)
                .flat_map(|_| pieces[next(pieces.len())].iter().copied())
                .collect();
            let scan = |size: usize| {
                let mut s = fetching();
                let mut result = Ok(());
                for chunk in answer.chunks(size) {
                    result = s.feed(chunk);
                    if result.is_err() {
                        break;
                    }
                }
                (result, s.command_outstanding())
            };
            let whole = scan(answer.len());
            for size in [1, 2, 5, 13, 64] {
                assert_eq!(
                    scan(size),
                    whole,
                    "chunks of {size}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }

    #[test]
    fn an_oversized_literal_is_refused_at_its_announcement() {
        let mut s = fetching();
        let err = s.feed(b"* 1 FETCH (BODY[] {2147483648}\r\n").unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::Literal {
                size: 2_147_483_648,
                limit: 1_000
            }
        );
        // A number past u64 is refused as well, not wrapped around.
        let mut s = fetching();
        let err = s
            .feed(b"* 1 FETCH (BODY[] {99999999999999999999999999}\r\n")
            .unwrap_err();
        assert!(matches!(err, LimitExceeded::Literal { .. }), "{err:?}");
        // Literals of one response count together.
        let mut s = fetching();
        s.feed(b"* 1 FETCH (A {600}\r\n").unwrap();
        s.feed(&[b'x'; 600]).unwrap();
        let err = s.feed(b" B {600+}\r\n").unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::Literal {
                size: 1200,
                limit: 1000
            }
        );
    }

    #[test]
    fn literal_bytes_are_not_line_bytes_and_a_status_line_announces_none() {
        let mut s = fetching();
        s.feed(b"* 1 FETCH (BODY[] {900}\r\n").unwrap();
        s.feed(&[b'\n'; 900]).unwrap();
        s.feed(b")\r\n").unwrap();
        // `{5}` at the end of a status line is text: what follows is a new response.
        s.feed(b"* OK text {5}\r\n").unwrap();
        let err = s.feed(&[b'y'; 101]).unwrap_err();
        assert_eq!(err, LimitExceeded::Line { limit: 100 });
    }

    #[test]
    fn a_long_line_is_refused_once_it_passes_the_limit() {
        let mut s = fetching();
        s.feed(&[b'*'; 100]).unwrap();
        assert_eq!(
            s.feed(b"x").unwrap_err(),
            LimitExceeded::Line { limit: 100 }
        );
    }

    #[test]
    fn untagged_responses_to_one_command_are_counted_until_its_tagged_answer() {
        let mut s = fetching();
        for _ in 0..5 {
            s.feed(b"* OK still here\r\n").unwrap();
        }
        s.feed(b"a1 OK done\r\n").unwrap();
        s.command_sent(CommandClass::Streamed);
        for _ in 0..5 {
            s.feed(b"+ go on\r\n").unwrap();
        }
        assert_eq!(
            s.feed(b"* OK one more\r\n").unwrap_err(),
            LimitExceeded::Responses { limit: 5 }
        );
    }

    #[test]
    fn a_kept_answer_is_bounded_in_bytes() {
        let mut s = FrameScanner::new(limits());
        s.command_sent(CommandClass::of(b"capability"));
        let line = b"* CAPABILITY IMAP4rev1 X-AN-EXTENSION-NAME-THAT-IS-LONG\r\n";
        let mut sent = 0;
        let err = loop {
            match s.feed(line) {
                Ok(()) => sent += line.len(),
                Err(e) => break e,
            }
        };
        assert!(sent <= 300, "{sent}");
        assert_eq!(
            err,
            LimitExceeded::Kept {
                limit: 300,
                command: "CAPABILITY"
            }
        );
        // A streamed answer is not: its responses are handed over one at a time.
        let mut s = fetching();
        for _ in 0..5 {
            s.feed(&[b'*'; 99]).unwrap();
            s.feed(b"\n").unwrap();
        }
    }

    #[test]
    fn commands_are_told_apart_by_name_and_a_password_is_never_held() {
        let mut lines = SentLines::default();
        let mut seen = Vec::new();
        lines.wrote(b"a1 UID FETCH 1:* (UID)\r\na2 IDLE\r\nDONE\r\n", |s| {
            seen.push(s)
        });
        lines.wrote(b"a3 ", |s| seen.push(s));
        lines.wrote(b"LOGIN \"ann\" \"hunter2-secret\"", |s| seen.push(s));
        assert!(!String::from_utf8_lossy(&lines.start).contains("hunter2"));
        lines.wrote(b"\r\n", |s| seen.push(s));
        assert_eq!(
            seen,
            vec![
                Sent::Command(CommandClass::Streamed),
                Sent::Command(CommandClass::Idle),
                Sent::Done,
                Sent::Command(CommandClass::Kept("LOGIN")),
            ]
        );
    }

    #[tokio::test]
    async fn a_command_not_answered_in_time_fails_the_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1024);
        let mut guarded = Guarded::new(
            client,
            ReadLimits {
                command_deadline: Duration::from_millis(300),
                ..ReadLimits::default()
            },
        );
        guarded.write_all(b"a1 NOOP\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        // One untagged line now and then does not keep the command alive.
        let drip = tokio::spawn(async move {
            for _ in 0..20 {
                if server.write_all(b"* OK wait\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let err = loop {
            match guarded.read(&mut buf).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        drip.abort();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            LimitExceeded::of(&err),
            Some(LimitExceeded::Deadline { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        // The failure sticks.
        assert!(guarded.read(&mut buf).await.is_err());
    }

    #[tokio::test]
    async fn between_commands_and_during_idle_there_is_no_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1024);
        let mut guarded = Guarded::new(
            client,
            ReadLimits {
                command_deadline: Duration::from_millis(100),
                ..ReadLimits::default()
            },
        );
        let mut buf = [0u8; 64];
        guarded.write_all(b"a1 NOOP\r\n").await.unwrap();
        server.write_all(b"a1 OK done\r\n").await.unwrap();
        assert!(guarded.read(&mut buf).await.unwrap() > 0);
        guarded.write_all(b"a2 IDLE\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        server.write_all(b"+ idling\r\n").await.unwrap();
        assert!(guarded.read(&mut buf).await.unwrap() > 0);
        // DONE starts the clock: the answer must come within the deadline.
        guarded.write_all(b"DONE\r\n").await.unwrap();
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// Found by fuzzing: imap-proto 0.17 slices a status line's text after its `[code]` by one
    /// byte and panics when that byte starts a multi-byte character. The guard refuses such a
    /// line before async-imap parses it; data lines with `]` before 8-bit text pass.
    #[test]
    fn a_status_line_with_8_bit_text_right_after_its_code_is_refused() {
        for line in [
            &b"* OK [ALERT]\xff Ah\r\n"[..],
            b"a1 NO [TRYCREATE]\xc3\xa9\r\n",
            b"averyveryverylongtag OK [X]\xe2\x82\xac\r\n",
            b"+ [X]\xff\r\n",
        ] {
            let mut scanner = FrameScanner::new(ReadLimits::default());
            assert_eq!(
                scanner.feed(line),
                Err(LimitExceeded::StatusText),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            &b"* OK [ALERT] \xff fine after a space\r\n"[..],
            b"* 1 FETCH (UID 1 ENVELOPE (\"d\" \"[tag]\xc3\xa9\"))\r\n",
            b"* LIST () \"/\" \"a]\xc3\xa9\"\r\n",
        ] {
            let mut scanner = FrameScanner::new(ReadLimits::default());
            assert_eq!(
                scanner.feed(line),
                Ok(()),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
