//! How a balanced proxy's call goes out: to one replica of the set, and to
//! another when the first could not run it (or, for an `#[idempotent]`
//! method, lost it).
//!
//! The rules are the named proxy's (`attempts`), with "reconnect" replaced
//! by "another replica": a call that never left, or that the server refused
//! while shutting down, goes again for any method; a call whose connection
//! failed after it left goes again only if the method is idempotent. Each
//! attempt goes to a replica this call has not tried yet, and a replica
//! whose connection failed is taken out of the set's choice at once.

use std::sync::Arc;

use serde::Serialize;

use super::{Call, MAX_RETRIES, ObjectRef, Via, awaits_hello, encode_request};
use crate::client::lookups::Lookup;
use crate::client::replicas::{Live, Pool};
use crate::connection::Response;
use crate::error::Error;
use crate::wire::{FrameBuf, Status};

/// What one attempt on one replica came to.
enum Attempt<Out> {
    /// The call's result, to return.
    Done(Result<Out, Error>),
    /// Try another replica; the error is what the caller gets if none is
    /// left, and whether the call may have run.
    Again { error: Error, ran: bool },
}

impl ObjectRef {
    /// A balanced proxy's call: to a replica of `pool`, then to others as
    /// the rules above allow.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn spread<A, Out, F>(
        &self,
        pool: &Arc<Pool>,
        call: Call<'_>,
        args: A,
        idempotent: bool,
        finish: &F,
    ) -> Result<Out, Error>
    where
        A: Serialize + Send,
        F: Fn(&Self, Via<'_>, Response) -> Result<Out, Error>,
    {
        let mut tried: Vec<u64> = Vec::new();
        // Why the last attempt failed, if the call goes again.
        let mut last: Option<Error> = None;
        let mut retries = 0;
        loop {
            let live = match pool.choose(&tried).await {
                Ok(live) => live,
                // Nothing left to try: the attempt's own error is the root
                // cause, if there was one.
                Err(e) => return Err(last.take().unwrap_or(e)),
            };
            let _busy = live.busy();
            let link = &live.link;
            // The arguments are encoded here, not in a function that takes
            // them by reference: no borrow of them may span an await.
            let outcome = match live.object.handle_on(link).await {
                Err(error) => self.not_run_on(pool, &live, error),
                Ok((handle, lookup)) => {
                    let mut frame = self.encode_call(&link.conn, handle, call.method, &args);
                    let mut hello = Ok(());
                    if awaits_hello(&frame, &link.conn) {
                        hello = link.conn.established().await;
                        frame = self.encode_call(&link.conn, handle, call.method, &args);
                    }
                    match (hello, frame) {
                        (Err(error), _) => self.not_run_on(pool, &live, error),
                        // The arguments do not encode: no replica would
                        // take them.
                        (Ok(()), Err(error)) if !error.is_connection_error() => {
                            Attempt::Done(Err(error))
                        }
                        (Ok(()), frame) => {
                            self.on_replica(pool, &live, lookup, frame, call, finish)
                                .await
                        }
                    }
                }
            };
            match outcome {
                Attempt::Done(result) => return result,
                Attempt::Again { error, ran } => {
                    let may_go_again = !ran || (idempotent && error.is_connection_error());
                    if !may_go_again || retries >= MAX_RETRIES {
                        return Err(error);
                    }
                    retries += 1;
                    tracing::debug!(service = %pool.service(), retries, ran,
                        %error, "sending the call to another replica");
                    tried.push(live.serial);
                    last = Some(error);
                }
            }
        }
    }

    /// One attempt of a call on one replica, its request encoded: sends
    /// it and says what came of it.
    #[allow(clippy::too_many_arguments)]
    async fn on_replica<Out, F>(
        &self,
        pool: &Arc<Pool>,
        live: &Arc<Live>,
        lookup: Option<Arc<Lookup>>,
        frame: Result<FrameBuf, Error>,
        call: Call<'_>,
        finish: &F,
    ) -> Attempt<Out>
    where
        F: Fn(&Self, Via<'_>, Response) -> Result<Out, Error>,
    {
        let link = &live.link;
        let (result, left) = self.exchange(&link.conn, frame, call).await;
        // Past its deadline (the sweep ended it): that is the answer.
        if let Err(e @ Error::Timeout { .. }) = result {
            return Attempt::Done(Err(e));
        }
        // Sent with its lookup: a failed lookup (another trait, no such
        // object) means the call did not run, and this replica is no use.
        if let Some(lookup) = lookup {
            match live.object.confirm(link, &lookup).await {
                Err(error) if !error.is_connection_error() => {
                    pool.reject(live, &error);
                    return Attempt::Again { error, ran: false };
                }
                Ok(_) if matches!(&result, Ok((_, r)) if r.status == Status::UnknownObject) => {
                    return Attempt::Again {
                        error: Error::UnknownObject {
                            name: self.name().to_owned(),
                        },
                        ran: false,
                    };
                }
                _ => {}
            }
        }
        match result {
            Ok((_, r)) if r.status == Status::ShuttingDown => {
                // Refused by a replica that is going away: it did not run.
                pool.lost(live);
                Attempt::Again {
                    error: Error::ShuttingDown,
                    ran: false,
                }
            }
            Ok((id, mut response)) => {
                let stream = response.stream.take();
                Attempt::Done(finish(self, Via::Conn(&link.conn, id, stream), response))
            }
            Err(error) if error.is_connection_error() => {
                pool.lost(live);
                let ran = left && !matches!(error, Error::ShuttingDown);
                Attempt::Again { error, ran }
            }
            Err(error) => Attempt::Done(Err(error)),
        }
    }

    /// The call did not run on `live` because of `error`: a connection
    /// failure takes the replica out, a failed lookup rejects it; either
    /// way another replica may take the call. Other errors are the call's.
    fn not_run_on<Out>(&self, pool: &Arc<Pool>, live: &Arc<Live>, error: Error) -> Attempt<Out> {
        if error.is_connection_error() {
            pool.lost(live);
            return Attempt::Again { error, ran: false };
        }
        if matches!(
            error,
            Error::TraitMismatch { .. } | Error::UnknownObject { .. }
        ) {
            pool.reject(live, &error);
            return Attempt::Again { error, ran: false };
        }
        Attempt::Done(Err(error))
    }

    /// A balanced proxy's oneway call: handed to one replica's connection.
    /// It goes to another only if it could not be handed over at all.
    pub(super) async fn spread_oneway<A>(
        &self,
        pool: &Arc<Pool>,
        method: u16,
        args: A,
    ) -> Result<(), Error>
    where
        A: Serialize + Send,
    {
        let mut tried: Vec<u64> = Vec::new();
        let mut last: Option<Error> = None;
        for _ in 0..=MAX_RETRIES {
            let live = match pool.choose(&tried).await {
                Ok(live) => live,
                Err(e) => return Err(last.take().unwrap_or(e)),
            };
            let _busy = live.busy();
            let link = &live.link;
            let handle = match live.object.handle_on(link).await {
                Ok((_, Some(lookup))) => live.object.confirm(link, &lookup).await,
                Ok((handle, None)) => Ok(handle),
                Err(e) => Err(e),
            };
            let sent = match handle {
                Ok(handle) => {
                    let mut frame = encode_request(&link.conn, true, handle, method, 0, &args);
                    if awaits_hello(&frame, &link.conn) {
                        frame = match link.conn.established().await {
                            Ok(()) => encode_request(&link.conn, true, handle, method, 0, &args),
                            Err(e) => Err(e),
                        };
                    }
                    match frame {
                        Ok(frame) => link.conn.send_oneway(frame).await,
                        Err(e) if e.is_connection_error() => Err(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(error) => match self.not_run_on::<()>(pool, &live, error) {
                    Attempt::Again { error, .. } => {
                        tried.push(live.serial);
                        last = Some(error);
                    }
                    Attempt::Done(result) => return result,
                },
            }
        }
        Err(last.unwrap_or_else(|| Error::NoReplicas {
            service: pool.service().to_owned(),
        }))
    }
}
