//! List-then-watch with automatic relisting: the building block of every controller-like loop
//! (agents, hollow nodes, podctl -w).

use crate::{Api, Error, EventStream, ListParams};
use futures::{Stream, StreamExt};
use podd_api::{Object, WatchEventType};
use std::time::Duration;

/// What a watcher yields.
#[derive(Debug, Clone)]
pub enum WatcherEvent<T> {
    /// A fresh list: the whole current set (at start, and after every relist).
    Restarted(Vec<T>),
    /// Created or modified.
    Applied(T),
    Deleted(T),
}

enum State<T> {
    List,
    Watch { rv: String },
    Streaming { rv: String, stream: EventStream<T> },
}

/// Lists, then watches from the list's resourceVersion (with bookmarks, which only move the
/// resume point); relists on 410 Expired. Transient errors are yielded (for logging) and
/// retried after a short pause; the stream never ends.
pub fn watcher<T: Object>(
    api: Api<T>,
    lp: ListParams,
) -> impl Stream<Item = Result<WatcherEvent<T>, Error>> + Send {
    let lp = ListParams {
        allow_bookmarks: true,
        ..lp
    };
    futures::stream::unfold((api, lp, State::<T>::List), |(api, lp, state)| async move {
        let mut state = state;
        loop {
            match state {
                State::List => match api.list(&lp).await {
                    Ok(list) => {
                        let rv = list.metadata.resource_version.clone().unwrap_or_default();
                        return Some((
                            Ok(WatcherEvent::Restarted(list.items)),
                            (api, lp, State::Watch { rv }),
                        ));
                    }
                    Err(e) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Some((Err(e), (api, lp, State::List)));
                    }
                },
                State::Watch { rv } => match api.watch(&lp, &rv).await {
                    Ok(stream) => state = State::Streaming { rv, stream },
                    Err(e) if e.is_expired() => state = State::List,
                    Err(e) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Some((Err(e), (api, lp, State::Watch { rv })));
                    }
                },
                State::Streaming { rv, mut stream } => match stream.next().await {
                    Some(Ok(ev)) => {
                        let rv = ev
                            .object
                            .metadata()
                            .resource_version
                            .clone()
                            .filter(|v| !v.is_empty())
                            .unwrap_or(rv);
                        let out = match ev.kind {
                            WatchEventType::Bookmark => {
                                state = State::Streaming { rv, stream };
                                continue;
                            }
                            WatchEventType::Deleted => WatcherEvent::Deleted(ev.object),
                            _ => WatcherEvent::Applied(ev.object),
                        };
                        return Some((Ok(out), (api, lp, State::Streaming { rv, stream })));
                    }
                    Some(Err(e)) if e.is_expired() => state = State::List,
                    Some(Err(e)) => {
                        return Some((Err(e), (api, lp, State::Watch { rv })));
                    }
                    None => state = State::Watch { rv },
                },
            }
        }
    })
}
