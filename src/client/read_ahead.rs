//! Read-ahead of history pages (docs/client.md, "Reading history"): while an app or a watch
//! opens one page of a room's history, the next page in the same direction is already on its
//! way, so paging through a long history costs the opening of its envelopes and little more.
//!
//! A page read ahead is used only when it is *closed*: it says more envelopes follow it in its
//! direction, so every envelope of the room in its range was stored before it was read, and
//! reading the same range again could only give the same envelopes (or fewer, once retention
//! dropped some). A page that reached the room's end, or a read ahead that failed, is read again
//! at the time it is asked for, so no page is older than the request that returns it. And
//! [`Session::read_page`](super::Session::read_page) returns a closed page only once
//! membershipd answers, at the call, that this identity is still a member of the room.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::task::JoinHandle;

use super::error::SessionError;
use crate::protocol::messages::{MessagePage, MessagesRequest};

/// How many pages a session reads ahead at once, each for its own request (one room paged by
/// the app, another by a watch's catch-up, ...); starting one more forgets the oldest. A page
/// is at most one message of the cluster (1 MiB by default).
pub(crate) const PAGES_AHEAD: usize = 4;

/// The pages a session is reading ahead. Dropping it stops them.
#[derive(Default)]
pub(crate) struct ReadAhead {
    pages: Mutex<VecDeque<Ahead>>,
}

/// One page being read ahead, for `request`.
struct Ahead {
    request: MessagesRequest,
    page: JoinHandle<Result<MessagePage, SessionError>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.page.abort();
    }
}

/// A page read ahead, taken for the request it was read for.
pub(crate) struct Pending(Ahead);

impl Pending {
    /// The page, once read, if it is closed (see the [module documentation](self)).
    pub(crate) async fn page(mut self) -> Option<MessagePage> {
        match (&mut self.0.page).await {
            Ok(Ok(page)) if page.more && !page.messages.is_empty() => Some(page),
            _ => None,
        }
    }
}

impl ReadAhead {
    /// The page being read ahead for `request`, if there is one; it is forgotten here.
    pub(crate) fn take(&self, request: &MessagesRequest) -> Option<Pending> {
        let mut pages = self.lock();
        let found = pages.iter().position(|ahead| ahead.request == *request)?;
        pages.remove(found).map(Pending)
    }

    /// Starts reading `request`'s page with `read`, unless it is being read already.
    pub(crate) fn start(
        &self,
        request: MessagesRequest,
        read: impl std::future::Future<Output = Result<MessagePage, SessionError>> + Send + 'static,
    ) {
        let mut pages = self.lock();
        if pages.iter().any(|ahead| ahead.request == request) {
            return;
        }
        if pages.len() == PAGES_AHEAD {
            pages.pop_front();
        }
        pages.push_back(Ahead {
            request,
            page: tokio::spawn(read),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Ahead>> {
        // Every change is one push or removal under the lock: a panic cannot leave it half-made.
        self.pages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The request for the page after `page` in `request`'s direction, when there is one: forward
/// from its last envelope for `after`, backward from its first for `before` and the latest.
pub(crate) fn next_request(
    request: &MessagesRequest,
    page: &MessagePage,
) -> Option<MessagesRequest> {
    if !page.more {
        return None;
    }
    let (first, last) = (page.messages.first()?, page.messages.last()?);
    let (after, before) = match request.after {
        Some(_) => (Some(last.position), None),
        None => (None, Some(first.position)),
    };
    Some(MessagesRequest {
        room: request.room.clone(),
        after,
        before,
        limit: request.limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::StoredMessage;
    use crate::RoomId;

    fn request(after: Option<u64>, before: Option<u64>) -> MessagesRequest {
        MessagesRequest {
            room: RoomId::new("lobby").unwrap(),
            after,
            before,
            limit: Some(2),
        }
    }

    fn page(positions: &[u64], more: bool) -> MessagePage {
        MessagePage {
            messages: positions
                .iter()
                .map(|&position| StoredMessage {
                    position,
                    time: 1,
                    envelope: vec![1],
                })
                .collect(),
            more,
        }
    }

    #[test]
    fn the_next_page_goes_on_from_the_edge_of_this_one_in_its_direction() {
        let forward = next_request(&request(Some(3), None), &page(&[5, 9], true));
        assert_eq!(forward, Some(request(Some(9), None)));
        let backward = next_request(&request(None, Some(20)), &page(&[5, 9], true));
        assert_eq!(backward, Some(request(None, Some(5))));
        let from_latest = next_request(&request(None, None), &page(&[5, 9], true));
        assert_eq!(from_latest, Some(request(None, Some(5))));
    }

    #[test]
    fn a_page_at_the_rooms_end_has_no_next_page() {
        assert_eq!(
            next_request(&request(Some(3), None), &page(&[5, 9], false)),
            None
        );
        assert_eq!(
            next_request(&request(Some(3), None), &page(&[], true)),
            None
        );
    }

    /// The page read ahead after `after`, if one is and it is closed.
    async fn taken(ahead: &ReadAhead, after: u64) -> Option<MessagePage> {
        ahead.take(&request(Some(after), None))?.page().await
    }

    #[tokio::test]
    async fn only_a_closed_page_read_ahead_is_used_and_each_is_used_once() {
        let ahead = ReadAhead::default();
        ahead.start(request(Some(1), None), async { Ok(page(&[2, 3], true)) });
        ahead.start(request(Some(3), None), async { Ok(page(&[4], false)) });
        ahead.start(request(Some(4), None), async {
            Err(SessionError::NoResponders)
        });
        assert_eq!(taken(&ahead, 1).await, Some(page(&[2, 3], true)));
        assert_eq!(taken(&ahead, 1).await, None, "used once");
        assert_eq!(taken(&ahead, 3).await, None, "at the end");
        assert_eq!(taken(&ahead, 4).await, None, "failed");
        assert_eq!(taken(&ahead, 7).await, None, "never read");
    }

    #[tokio::test]
    async fn starting_one_page_more_than_it_holds_forgets_the_oldest() {
        let ahead = ReadAhead::default();
        for after in 0..=PAGES_AHEAD as u64 {
            ahead.start(request(Some(after), None), async move {
                Ok(page(&[after + 1, after + 2], true))
            });
        }
        assert_eq!(taken(&ahead, 0).await, None);
        assert!(taken(&ahead, PAGES_AHEAD as u64).await.is_some());
    }
}
