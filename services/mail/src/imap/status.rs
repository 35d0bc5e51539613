//! STATUS of any folder, whatever its name. async-imap's `Session::status` keeps the answer
//! only when the name in it equals the name asked for, and the parser under it leaves a quoted
//! name's escapes in: for a folder named with `"` or `\` the answer never matched, and the
//! folder came back as empty (no messages, no UIDVALIDITY) without an error. [`status`] sends
//! the same command and matches the answer's name with its escapes taken out.

use async_imap::error::{Error, Result, ValidateError};
use async_imap::imap_proto::{MailboxDatum, Response, StatusAttribute};
use async_imap::types::Mailbox;

use super::names::unescape_quoted;
use super::ImapSession;

/// `name` as an IMAP quoted string.
fn quoted(name: &str) -> Result<String> {
    if let Some(c) = name.chars().find(|c| matches!(c, '\r' | '\n')) {
        return Err(Error::Validate(ValidateError(c)));
    }
    Ok(format!(
        "\"{}\"",
        name.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Whether the name in a STATUS answer is `asked` (as the server spelled it, or quoted).
fn is_named(answered: &str, asked: &str) -> bool {
    answered == asked || unescape_quoted(answered) == asked
}

/// STATUS `name` `items` (such as `(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)`): the figures the
/// server gave for that folder. A refusal is `Error::No` or `Error::Bad`, as async-imap words
/// them ([`super::refusal`] reads them).
pub async fn status(session: &mut ImapSession, name: &str, items: &str) -> Result<Mailbox> {
    let tag = session
        .run_command(format!("STATUS {} {items}", quoted(name)?))
        .await?;
    let mut mailbox = Mailbox::default();
    loop {
        let Some(response) = session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        match response.parsed() {
            Response::Done {
                tag: done,
                status,
                outcome,
            } if *done == tag => {
                use async_imap::imap_proto::Status;
                let said = || format!("code: {:?}, info: {:?}", outcome.code, outcome.information);
                return match status {
                    Status::Ok => Ok(mailbox),
                    Status::No => Err(Error::No(said())),
                    Status::Bad => Err(Error::Bad(said())),
                    other => Err(Error::Io(std::io::Error::other(format!(
                        "STATUS answered {other:?}: {}",
                        said()
                    )))),
                };
            }
            Response::MailboxData(MailboxDatum::Status {
                mailbox: answered,
                status,
            }) if is_named(answered, name) => {
                for attribute in status {
                    match attribute {
                        StatusAttribute::Messages(n) => mailbox.exists = *n,
                        StatusAttribute::Recent(n) => mailbox.recent = *n,
                        StatusAttribute::UidNext(n) => mailbox.uid_next = Some(*n),
                        StatusAttribute::UidValidity(n) => mailbox.uid_validity = Some(*n),
                        StatusAttribute::Unseen(n) => mailbox.unseen = Some(*n),
                        StatusAttribute::HighestModSeq(n) => mailbox.highest_modseq = Some(*n),
                        _ => {}
                    }
                }
            }
            // Anything else (EXISTS of the selected folder, another folder's STATUS) is not
            // this answer.
            _ => {}
        }
    }
}

/// STATUS `items` of each of `names`, the commands sent together and their answers read as
/// they come: one round trip for all of them instead of one each. Each folder's figures, or
/// its refusal, in the order of `names`; an error of the connection fails them all.
/// (Between the first answer and the last, the connection's guard counts what comes as
/// answers to no command: bounded by its kept-bytes limit, which a STATUS answer is far
/// below.)
pub async fn statuses(
    session: &mut ImapSession,
    names: &[&str],
    items: &str,
) -> Result<Vec<Result<Mailbox>>> {
    let mut pending = Vec::with_capacity(names.len());
    for name in names {
        let tag = session
            .run_command(format!("STATUS {} {items}", quoted(name)?))
            .await?;
        pending.push((tag, *name, Mailbox::default(), None::<Result<()>>));
    }
    let mut left = pending.len();
    while left > 0 {
        let Some(response) = session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        match response.parsed() {
            Response::Done {
                tag,
                status,
                outcome,
            } => {
                let Some(entry) = pending
                    .iter_mut()
                    .find(|(t, _, _, done)| t == tag && done.is_none())
                else {
                    continue;
                };
                use async_imap::imap_proto::Status;
                let said = || format!("code: {:?}, info: {:?}", outcome.code, outcome.information);
                entry.3 = Some(match status {
                    Status::Ok => Ok(()),
                    Status::No => Err(Error::No(said())),
                    Status::Bad => Err(Error::Bad(said())),
                    other => Err(Error::Io(std::io::Error::other(format!(
                        "STATUS answered {other:?}: {}",
                        said()
                    )))),
                });
                left -= 1;
            }
            Response::MailboxData(MailboxDatum::Status {
                mailbox: answered,
                status,
            }) => {
                // The first folder of that name still waiting for its answer.
                let Some(entry) = pending
                    .iter_mut()
                    .find(|(_, name, _, done)| done.is_none() && is_named(answered, name))
                else {
                    continue;
                };
                for attribute in status {
                    let mailbox = &mut entry.2;
                    match attribute {
                        StatusAttribute::Messages(n) => mailbox.exists = *n,
                        StatusAttribute::Recent(n) => mailbox.recent = *n,
                        StatusAttribute::UidNext(n) => mailbox.uid_next = Some(*n),
                        StatusAttribute::UidValidity(n) => mailbox.uid_validity = Some(*n),
                        StatusAttribute::Unseen(n) => mailbox.unseen = Some(*n),
                        StatusAttribute::HighestModSeq(n) => mailbox.highest_modseq = Some(*n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(pending
        .into_iter()
        .map(|(_, _, mailbox, done)| match done {
            Some(Ok(())) => Ok(mailbox),
            Some(Err(e)) => Err(e),
            None => Err(Error::ConnectionLost),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::connect;
    use crate::testing::{self, line_server};

    /// A server that answers STATUS of `Client "ACME"` (quoted, escapes and all) and refuses
    /// any other folder.
    async fn status_server() -> std::net::SocketAddr {
        let (addr, _) = line_server("* OK fake IMAP ready\r\n", |line| {
            let mut words = line.splitn(3, ' ');
            let (tag, command, rest) = (
                words.next().unwrap_or("*"),
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
            );
            match command.to_ascii_uppercase().as_str() {
                "LOGIN" => format!("{tag} OK logged in\r\n"),
                "STATUS" if rest.starts_with(r#""Client \"ACME\"" "#) => format!(
                    "* 4 EXISTS\r\n\
                     * STATUS \"Client \\\"ACME\\\"\" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 7 UNSEEN 2)\r\n\
                     {tag} OK done\r\n"
                ),
                "STATUS" => format!("{tag} NO [NONEXISTENT] Mailbox doesn't exist\r\n"),
                _ => format!("{tag} BAD unknown\r\n"),
            }
        })
        .await;
        addr
    }

    #[tokio::test]
    async fn a_folder_named_with_quotes_has_its_figures() {
        let addr = status_server().await;
        let connector = testing::connector(true, std::time::Duration::from_secs(5));
        let login = testing::login("127.0.0.1", addr.port(), crate::login::Security::None);
        let mut session = connect(&connector, &login).await.expect("logged in");
        let items = "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)";
        let got = status(&mut session, r#"Client "ACME""#, items)
            .await
            .expect("STATUS");
        assert_eq!(
            (got.exists, got.uid_next, got.uid_validity, got.unseen),
            (3, Some(4), Some(7), Some(2))
        );
        // Together: each folder's own figures, a refusal its own.
        let both = statuses(&mut session, &[r#"Client "ACME""#, "Gone"], items)
            .await
            .expect("STATUS of both");
        let first = both[0].as_ref().expect("figures");
        assert_eq!((first.exists, first.uid_validity), (3, Some(7)));
        assert!(both[1].is_err(), "{:?}", both[1]);
        let err = status(&mut session, "Gone", items)
            .await
            .expect_err("refused");
        let refused = super::super::refusal(&err).expect("a refusal");
        assert_eq!(refused.code.as_deref(), Some("NONEXISTENT"));
        assert!(status(&mut session, "a\r\nb", items).await.is_err());
    }
}
