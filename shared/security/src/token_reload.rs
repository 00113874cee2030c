//! The token book a server checks, following its file: `--tokens-file` is read every
//! `--tokens-reload-secs` and a file whose contents changed replaces the book, so tokens are
//! added and revoked without a restart. A file that does not parse (a mistake, or cut inside a
//! line while being written) leaves the previous book in force and is retried on the next poll;
//! the warning says why. Replace the file atomically (write a new one and rename it over the
//! old, as Kubernetes does for Secret volumes): a copy cut at a line boundary parses, with
//! fewer tokens, until the next poll.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::tokens::{TokenBook, TokenFileError, read_file};

/// The current token book. Cheap to clone and to read on every request (lock-free); the
/// polling task ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Tokens {
    book: Arc<ArcSwap<TokenBook>>,
}

/// The text of the file at `path` and its hash: a rotation may keep the file's length and
/// modification time (on a coarse clock), so changes are told by content.
fn read(path: &Path) -> Result<(String, [u8; 32]), TokenFileError> {
    let text = read_file(path)?;
    let hash = Sha256::digest(text.as_bytes()).into();
    Ok((text, hash))
}

impl Tokens {
    /// A fixed book (inline tokens, tests).
    pub fn fixed(book: TokenBook) -> Self {
        Self {
            book: Arc::new(ArcSwap::from_pointee(book)),
        }
    }

    /// Loads `path` (an error here is a startup error) and, with a non-zero `every`, polls it
    /// on the current tokio runtime.
    pub fn follow(path: PathBuf, every: Duration) -> Result<Self, TokenFileError> {
        let (text, mut seen) = read(&path)?;
        let tokens = Self::fixed(TokenBook::parse(&text)?);
        if !every.is_zero() {
            let book = Arc::downgrade(&tokens.book);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first tick is immediate: the file was just read
                loop {
                    tick.tick().await;
                    let Some(book) = Weak::upgrade(&book) else {
                        return;
                    };
                    // A failure leaves `seen` as it was: retried on the next tick.
                    let changed = read(&path).and_then(|(text, hash)| match hash == seen {
                        true => Ok(None),
                        false => Ok(Some((TokenBook::parse(&text)?, hash))),
                    });
                    match changed {
                        Ok(None) => {}
                        Ok(Some((new, hash))) => {
                            seen = hash;
                            tracing::info!(tokens = new.len(), "token file reloaded");
                            book.store(Arc::new(new));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "token file reload failed; keeping the previous tokens")
                        }
                    }
                }
            });
        }
        Ok(tokens)
    }

    /// The book as of now.
    pub fn current(&self) -> Arc<TokenBook> {
        self.book.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{Role, new_token};

    /// Lets the polling task run `ticks` intervals of paused time.
    async fn pass(every: Duration, ticks: u32) {
        for _ in 0..ticks {
            tokio::time::advance(every).await;
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rewritten_file_replaces_the_book_and_a_broken_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (old, old_line) = new_token("old", Role::Infer);
        let (new, new_line) = new_token("new", Role::Admin);
        std::fs::write(&path, format!("{old_line}\n")).unwrap();
        let every = Duration::from_secs(10);
        let tokens = Tokens::follow(path.clone(), every).unwrap();
        assert!(tokens.current().verify(&old).is_some());
        assert!(tokens.current().verify(&new).is_none());

        // Revoke `old`, add `new`: the same length, maybe the same modification time.
        std::fs::write(&path, format!("{new_line}\n")).unwrap();
        let mut waited = 0;
        while tokens.current().verify(&new).is_none() {
            assert!(
                waited < 5,
                "the new book was not loaded after {waited} intervals"
            );
            pass(every, 1).await;
            waited += 1;
        }
        assert!(
            tokens.current().verify(&old).is_none(),
            "revoked token still accepted"
        );
        assert_eq!(tokens.current().verify(&new).unwrap().role, Role::Admin);

        // A broken file keeps the last good book.
        std::fs::write(&path, "new admin md5:00\n").unwrap();
        pass(every, 3).await;
        assert!(tokens.current().verify(&new).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_poller_stops_with_the_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("{}\n", new_token("a", Role::Infer).1)).unwrap();
        let every = Duration::from_secs(1);
        let tokens = Tokens::follow(path, every).unwrap();
        let weak = Arc::downgrade(&tokens.book);
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(tasks, 1);
        drop(tokens);
        assert!(weak.upgrade().is_none());
        pass(every, 2).await;
        assert_eq!(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            0
        );
    }

    #[test]
    fn a_missing_file_is_a_startup_error() {
        let err = Tokens::follow("/nonexistent/tokens".into(), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tokens"), "{err}");
    }
}
