//! Group commit for the mail sender ([`crate::delivery`]): requests that arrive while a batch
//! is being written wait, and are written together next, in one statement or transaction.
//! Under load a few round trips serve dozens of mails; a request alone is written at once,
//! without waiting for company.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// A request and where its answer goes.
type Asked<T, R> = (T, oneshot::Sender<R>);

/// The asking side: cheap to share by reference among the senders of one pump.
pub struct Gather<T, R> {
    tx: mpsc::UnboundedSender<Asked<T, R>>,
}

/// The serving side, for [`serve`].
pub struct Requests<T, R> {
    rx: mpsc::UnboundedReceiver<Asked<T, R>>,
}

/// A new pair: requests made through the [`Gather`] are answered by [`serve`] on the
/// [`Requests`].
pub fn channel<T, R>() -> (Gather<T, R>, Requests<T, R>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Gather { tx }, Requests { rx })
}

impl<T, R> Gather<T, R> {
    /// Hands `item` over and waits for its answer; `None` when it was not answered (the
    /// server stopped, or its batch answered fewer items than it was given).
    pub async fn ask(&self, item: T) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).ok()?;
        rx.await.ok()
    }
}

/// Answers requests until every [`Gather`] of the pair is dropped and the last request is
/// answered: each time, all those waiting (at most `max`) in one call of `batch`, which
/// returns one answer per item, in their order.
pub async fn serve<T, R, F, Fut>(requests: Requests<T, R>, max: usize, mut batch: F)
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    let mut rx = requests.rx;
    let max = max.max(1);
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while waiting.len() < max {
            match rx.try_recv() {
                Ok(next) => waiting.push(next),
                Err(_) => break,
            }
        }
        let (items, answers): (Vec<T>, Vec<oneshot::Sender<R>>) = waiting.into_iter().unzip();
        let results = batch(items).await;
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn waiting_requests_are_answered_together_and_in_order() {
        let (gather, requests) = channel::<u32, u32>();
        let batches = AtomicUsize::new(0);
        let serving = serve(requests, 100, |items: Vec<u32>| {
            batches.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                items.into_iter().map(|i| i * 10).collect()
            }
        });
        let asking = async {
            let gather = gather;
            let answers = futures::future::join_all((0..50).map(|i| gather.ask(i))).await;
            answers
        };
        let (answers, ()) = tokio::join!(asking, serving);
        assert_eq!(
            answers,
            (0..50).map(|i| Some(i * 10)).collect::<Vec<_>>(),
            "each request gets its own answer"
        );
        let batches = batches.load(Ordering::SeqCst);
        assert!(
            batches < 50,
            "50 requests made at once took {batches} batches"
        );
    }

    #[tokio::test]
    async fn a_batch_is_at_most_max_and_a_short_answer_leaves_the_rest_unanswered() {
        let (gather, requests) = channel::<u32, u32>();
        let serving = serve(requests, 3, |items: Vec<u32>| async move {
            assert!(items.len() <= 3, "{items:?}");
            // Answers only the first of each batch.
            items.into_iter().take(1).collect()
        });
        let asking = async {
            let gather = gather;
            futures::future::join_all((0..6).map(|i| gather.ask(i))).await
        };
        let (answers, ()) = tokio::join!(asking, serving);
        let answered = answers.iter().filter(|a| a.is_some()).count();
        assert!(
            (2..6).contains(&answered),
            "one answer per batch of at most 3: {answers:?}"
        );
    }
}
