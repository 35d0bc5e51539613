//! Any bytes as a mail server's answer to a command, read through the guard between the
//! server and async-imap (`mailroom_mail::imap::guard`), arriving split wherever the fuzzer
//! says.
//!
//! The first byte picks the command the answer is to (a streamed FETCH, a kept CAPABILITY or
//! SEARCH, IDLE, or none), the second how the bytes are split into reads; the rest is what
//! the server sends. Asserted: nothing panics; the scan's verdict does not depend on how the
//! bytes are split (one read, the fuzzer's reads, byte by byte), and a split read fails at the
//! read holding the byte that passed a limit; what the guarded reader hands over is exactly
//! the input up to that read, nothing after it, and every later read fails too; what it hands
//! over never makes async-imap's parser (imap-proto, fed the way async-imap feeds it) hold or
//! ask for more than one response's limits allow — no line or literal past a limit gets
//! through by being read as something else; and a well-formed answer within the limits (a
//! FETCH with a literal of the fuzzer's bytes, a LIST of the fuzzer's name) passes unchanged.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto::Response;
use mailroom_mail::imap::guard::{CommandClass, FrameScanner, Guarded, LimitExceeded, ReadLimits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Small limits, so the fuzzer reaches them.
const LIMITS: ReadLimits = ReadLimits {
    max_line_bytes: 200,
    max_literal_bytes: 1_000,
    max_responses: 8,
    max_kept_bytes: 600,
    command_deadline: Duration::from_secs(3600),
};

/// The most one response may take: its text and its literals at their limits.
const ONE_RESPONSE: u64 = LIMITS.max_line_bytes + LIMITS.max_literal_bytes;

/// The commands an answer may be to (`None`: between commands).
const COMMANDS: [Option<&str>; 5] = [
    Some("a1 UID FETCH 1:* (UID FLAGS ENVELOPE BODY.PEEK[])\r\n"),
    Some("a1 CAPABILITY\r\n"),
    Some("a1 IDLE\r\n"),
    Some("a1 UID SEARCH ALL\r\n"),
    None,
];

pub fn imap_guard(data: &[u8]) {
    let (command, seed, answer) = match data {
        [command, seed, rest @ ..] => (
            COMMANDS[usize::from(*command) % COMMANDS.len()],
            *seed,
            rest,
        ),
        _ => (COMMANDS[0], 0, data),
    };
    let reads = split(answer, seed);
    let verdict = scan_bytewise(command, answer);
    check_scan_splits(command, answer, &reads, verdict);
    let delivered = check_guarded(command, &reads, verdict);
    check_parser_is_bounded(&delivered);
    well_formed_passes(answer, seed);
}

/// The answer in reads of 1 to 16 bytes as `seed` says (0: one read).
fn split(answer: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![answer];
    }
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut reads = Vec::new();
    let mut rest = answer;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state % 16 + 1) as usize;
        let (read, tail) = rest.split_at(size.min(rest.len()));
        reads.push(read);
        rest = tail;
    }
    reads
}

fn scanner(command: Option<&str>) -> FrameScanner {
    let mut scanner = FrameScanner::new(LIMITS);
    if let Some(line) = command {
        scanner.command_sent(class_of(line));
    }
    scanner
}

fn class_of(line: &str) -> CommandClass {
    let mut words = line.split_whitespace().skip(1);
    let name = match words.next() {
        Some(uid) if uid.eq_ignore_ascii_case("UID") => words.next().unwrap_or_default(),
        Some(name) => name,
        None => "",
    };
    CommandClass::of(name.as_bytes())
}

/// Where a byte-by-byte scan fails: the failing byte's offset and the limit.
fn scan_bytewise(command: Option<&str>, answer: &[u8]) -> Option<(usize, LimitExceeded)> {
    let mut scanner = scanner(command);
    answer
        .iter()
        .enumerate()
        .find_map(|(at, b)| scanner.feed(std::slice::from_ref(b)).err().map(|e| (at, e)))
}

fn check_scan_splits(
    command: Option<&str>,
    answer: &[u8],
    reads: &[&[u8]],
    verdict: Option<(usize, LimitExceeded)>,
) {
    let whole = scanner(command).feed(answer).err();
    assert_eq!(
        whole,
        verdict.map(|(_, e)| e),
        "one read and byte by byte disagree"
    );
    let mut scanner = scanner(command);
    let mut start = 0;
    for read in reads {
        if let Err(e) = scanner.feed(read) {
            let (at, expected) = verdict.expect("a split read failed where byte by byte did not");
            assert_eq!(e, expected, "split reads and byte by byte disagree");
            assert!(
                (start..start + read.len()).contains(&at),
                "the read of bytes {start}..{} failed, but the limit was passed at byte {at}",
                start + read.len()
            );
            return;
        }
        start += read.len();
    }
    assert_eq!(
        verdict, None,
        "byte by byte failed where split reads did not"
    );
}

/// Reads the answer through [`Guarded`]; what it handed over, read by read.
fn check_guarded(
    command: Option<&str>,
    reads: &[&[u8]],
    verdict: Option<(usize, LimitExceeded)>,
) -> Vec<Vec<u8>> {
    let total: usize = reads.iter().map(|r| r.len()).sum();
    let (handed, failure, after) = runtime().block_on(async {
        let mut guarded = Guarded::new(Server::new(reads), LIMITS);
        if let Some(line) = command {
            guarded
                .write_all(line.as_bytes())
                .await
                .expect("writing to an in-memory stream");
        }
        let mut handed = Vec::new();
        // Larger than any read, so each read of the server is one read of the guard.
        let mut buf = vec![0u8; total + 1];
        let failure = loop {
            match guarded.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => handed.push(buf[..n].to_vec()),
                Err(e) => break Some(e),
            }
        };
        let after = match failure {
            Some(_) => guarded.read(&mut buf).await.err(),
            None => None,
        };
        (handed, failure, after)
    });
    let handed_bytes: Vec<u8> = handed.concat();
    let all: Vec<u8> = reads.concat();
    match verdict {
        None => {
            assert!(failure.is_none(), "the guard failed a read: {failure:?}");
            assert_eq!(handed_bytes, all, "the guard changed what it handed over");
        }
        Some((at, limit)) => {
            let failure = failure.expect("the guard handed over bytes past a limit");
            assert_eq!(LimitExceeded::of(&failure), Some(limit));
            let failed_read = reads
                .iter()
                .scan(0, |start, read| {
                    let this = *start;
                    *start += read.len();
                    Some(this..*start)
                })
                .find(|range| range.contains(&at))
                .expect("the failing byte is in a read");
            assert_eq!(
                handed_bytes,
                all[..failed_read.start],
                "the guard handed over bytes of the read that passed a limit, or lost some before it"
            );
            let after = after.expect("a read after a failure succeeded");
            assert_eq!(
                LimitExceeded::of(&after),
                Some(limit),
                "the failure did not stick"
            );
        }
    }
    handed
}

/// Feeds what the guard handed over to imap-proto the way async-imap does: append each read,
/// parse responses off the front while whole ones are there. async-imap sizes its buffer for
/// what the parser says it needs and holds a response whole until it parses: neither that
/// size, nor what it holds, nor a response it parses may pass one response's limits.
fn check_parser_is_bounded(handed: &[Vec<u8>]) {
    let mut held: Vec<u8> = Vec::new();
    for read in handed {
        held.extend_from_slice(read);
        loop {
            match Response::parse(&held) {
                Ok((rest, _)) => {
                    let used = held.len() - rest.len();
                    if used == 0 {
                        break;
                    }
                    assert!(
                        used as u64 <= ONE_RESPONSE,
                        "async-imap held a response of {used} bytes (one response is at most \
                         {ONE_RESPONSE}), all let through by the guard: {:?}",
                        String::from_utf8_lossy(&held[..used.min(300)])
                    );
                    held.drain(..used);
                }
                Err(nom::Err::Incomplete(nom::Needed::Size(more))) => {
                    let needs = held.len() as u64 + more.get() as u64;
                    assert!(
                        needs <= ONE_RESPONSE,
                        "async-imap would size its buffer to {needs} bytes (one response is at \
                         most {ONE_RESPONSE}) for what the guard let through: {:?}",
                        String::from_utf8_lossy(&held[..held.len().min(300)])
                    );
                    break;
                }
                Err(nom::Err::Incomplete(nom::Needed::Unknown)) => break,
                // async-imap gives up on the connection here.
                Err(_) => return,
            }
        }
        assert!(
            held.len() as u64 <= ONE_RESPONSE,
            "async-imap would hold {} bytes it cannot parse yet (one response is at most \
             {ONE_RESPONSE}), all let through by the guard: {:?}",
            held.len(),
            String::from_utf8_lossy(&held[..held.len().min(300)])
        );
    }
}

/// A FETCH with the fuzzer's bytes as its literal and a LIST of a name made of them, within
/// the limits, passes the guard unchanged however it is split, and parses.
fn well_formed_passes(bytes: &[u8], seed: u8) {
    let body = &bytes[..bytes.len().min(LIMITS.max_literal_bytes as usize)];
    let name: String = bytes
        .iter()
        .map(|&b| char::from(b))
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\') || *c == ' ')
        .take(100)
        .collect();
    let mut answer = format!(
        "* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[] {{{}}}\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer.extend_from_slice(b")\r\n");
    answer.extend_from_slice(format!("* LIST (\\HasNoChildren) \"/\" \"{name}\"\r\n").as_bytes());
    answer.extend_from_slice(b"* 2 EXISTS\r\na1 OK done\r\n");
    let command = COMMANDS[0];
    let reads = split(&answer, seed);
    assert_eq!(
        scan_bytewise(command, &answer),
        None,
        "a well-formed answer was refused"
    );
    let handed = check_guarded(command, &reads, None);
    let mut parsed = 0;
    let mut rest = &handed.concat()[..];
    while !rest.is_empty() {
        match Response::parse(rest) {
            Ok((tail, _)) => {
                rest = tail;
                parsed += 1;
            }
            Err(e) => panic!("a well-formed answer did not parse: {e:?}"),
        }
    }
    assert_eq!(parsed, 4);
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// An in-memory server: its reads are the given pieces, one per read; writes are dropped.
#[derive(Debug)]
struct Server {
    reads: VecDeque<Vec<u8>>,
}

impl Server {
    fn new(reads: &[&[u8]]) -> Self {
        Self {
            reads: reads.iter().map(|r| r.to_vec()).collect(),
        }
    }
}

impl AsyncRead for Server {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(mut read) = this.reads.pop_front() {
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read[..n]);
            if n < read.len() {
                this.reads.push_front(read.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
