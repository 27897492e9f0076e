//! [`ObjectRef`]: what a generated proxy wraps, and how its calls go out.
//!
//! An object is reached one of three ways: by name through a [`Client`]
//! (looked up once per connection, reconnecting as the client's policy
//! says), as an object the peer exported on one connection (a callback or a
//! returned object: that connection only, no reconnect), or locally (an
//! object this process serves, wrapped by [`crate::Remote::new`] and not
//! sent anywhere yet: calls go straight to it). A fourth, balanced, spreads
//! calls over the replicas of a service (`balanced.rs`).

mod balanced;

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::lookups::{Lookup, Progress};
use super::replicas::Pool;
use super::{Client, Link};
use crate::connection::{Connection, Deadline, Discard, Import, Response, within};
use crate::error::{CallError, Error};
use crate::object::{ObjectDescriptor, ObjectInfo};
use crate::schema::ObjectSchema;
use crate::scope;
use crate::service::{Outcome, Service};
use crate::stream::Streaming;
use crate::wire::{self, EncodeError, FrameBuf, Status};

/// A reference to a remote (or local) object: what a generated proxy wraps.
/// Cheap to clone.
#[derive(Clone)]
pub struct ObjectRef {
    target: Target,
    descriptor: &'static ObjectDescriptor,
    timeout: Duration,
}

#[derive(Clone)]
enum Target {
    /// Looked up by name on the client's current connection.
    Named {
        client: Client,
        name: Arc<str>,
        /// `(generation << 32) | handle` of the last lookup, shared by
        /// clones; 0 means not looked up on any connection yet.
        cached: Arc<AtomicU64>,
    },
    /// Exported by the peer on one connection.
    Imported(Arc<Import>),
    /// Served by this process, called directly.
    Local(Arc<dyn Service>),
    /// Spread over the replicas of a service.
    Balanced(Arc<Pool>),
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.target {
            Target::Named { .. } => "named",
            Target::Imported(_) => "imported",
            Target::Local(_) => "local",
            Target::Balanced(_) => "balanced",
        };
        f.debug_struct("ObjectRef")
            .field("name", &self.name())
            .field("trait", &self.descriptor.trait_name)
            .field("kind", &kind)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Extra attempts for a call that did not run (any method) or whose
/// connection was lost (`#[idempotent]` methods only).
const MAX_RETRIES: u32 = 2;

/// Where a response came from, for decoding it.
enum Via<'a> {
    /// A connection, as the answer to request `.1`; with where the stream
    /// it opened arrives, if any.
    Conn(
        &'a Arc<Connection>,
        u64,
        Option<Arc<crate::connection::Inbox>>,
    ),
    /// A local call; with the stream it opened, if any.
    Local(Option<crate::service::BoxedSource>),
}

impl Via<'_> {
    fn conn(&self) -> Option<&Arc<Connection>> {
        match self {
            Self::Conn(conn, ..) => Some(conn),
            Self::Local(_) => None,
        }
    }

    /// The stream the call opened.
    fn stream<T: DeserializeOwned + Send + 'static>(self) -> Result<Streaming<T>, Error> {
        match self {
            Self::Conn(conn, id, Some(inbox)) => Ok(Streaming::received(conn, id, inbox)),
            Self::Conn(_, _, None) => Err(Error::Protocol {
                detail: "the call opened no stream".into(),
            }),
            Self::Local(Some(source)) => Ok(Streaming::from_source(source)),
            Self::Local(None) => Err(Error::Protocol {
                detail: "the call opened no stream".into(),
            }),
        }
    }
}

/// How a call's request goes out and its answer comes back.
#[derive(Clone, Copy)]
enum Shape {
    Call,
    Stream,
}

/// What every attempt of one call shares.
#[derive(Clone, Copy)]
struct Call<'d> {
    method: u16,
    shape: Shape,
    /// Decodes an answer that comes after the caller gave up.
    discard: Option<Discard>,
    deadline: &'d Deadline,
}

impl ObjectRef {
    pub(crate) fn named(
        client: Client,
        name: &str,
        descriptor: &'static ObjectDescriptor,
        timeout: Duration,
    ) -> Self {
        Self {
            target: Target::Named {
                client,
                name: Arc::from(name),
                cached: Arc::new(AtomicU64::new(0)),
            },
            descriptor,
            timeout,
        }
    }

    /// A reference to object `handle` the peer of `conn` exported.
    pub(crate) fn imported(
        conn: Arc<Connection>,
        handle: u32,
        descriptor: &'static ObjectDescriptor,
    ) -> Self {
        let timeout = conn.config.call_timeout;
        Self {
            target: Target::Imported(Arc::new(Import::new(conn, handle))),
            descriptor,
            timeout,
        }
    }

    /// Calls spread over `pool`'s replicas.
    pub(crate) fn balanced(
        pool: Arc<Pool>,
        descriptor: &'static ObjectDescriptor,
        timeout: Duration,
    ) -> Self {
        Self {
            target: Target::Balanced(pool),
            descriptor,
            timeout,
        }
    }

    /// A reference to `service`, served by this process.
    pub(crate) fn local(service: Arc<dyn Service>, descriptor: &'static ObjectDescriptor) -> Self {
        Self {
            target: Target::Local(service),
            descriptor,
            timeout: crate::config::DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The service behind a local reference.
    pub(crate) fn local_service(&self) -> Option<&Arc<dyn Service>> {
        match &self.target {
            Target::Local(service) => Some(service),
            _ => None,
        }
    }

    /// The name the object was looked up under; for an object passed over a
    /// connection, its trait's name; for a balanced proxy, the service's.
    pub fn name(&self) -> &str {
        match &self.target {
            Target::Named { name, .. } => name,
            Target::Balanced(pool) => pool.service(),
            Target::Imported(_) | Target::Local(_) => self.descriptor.trait_name,
        }
    }

    /// The client this object is reached through, if it was looked up by name.
    pub fn client(&self) -> Option<&Client> {
        match &self.target {
            Target::Named { client, .. } => Some(client),
            _ => None,
        }
    }

    /// The deadline applied to each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same object with another per-call deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// Calls a method that returns a plain value.
    pub fn call<'a, A, R>(
        &'a self,
        method: u16,
        args: A,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'a
    where
        A: Serialize + Send + 'a,
        R: DeserializeOwned + Send + 'a,
    {
        let discard: Discard = discard_reply::<R>;
        self.invoke(
            method,
            args,
            Shape::Call,
            Some(discard),
            move |this, via, r| match r.status {
                Status::Ok => decode_body(via.conn(), &r),
                Status::AppError => Err(Error::Protocol {
                    detail: "an application error for a method that has none".into(),
                }),
                other => Err(this.status_error(other, &r.body)),
            },
        )
    }

    /// Calls a method that returns `Result<T, E>`.
    pub fn call_fallible<'a, A, T, E>(
        &'a self,
        method: u16,
        args: A,
    ) -> impl Future<Output = Result<T, CallError<E>>> + Send + 'a
    where
        A: Serialize + Send + 'a,
        T: DeserializeOwned + Send + 'a,
        E: DeserializeOwned + Send + 'a,
    {
        let discard: Discard = discard_result::<T, E>;
        let call = self.invoke(
            method,
            args,
            Shape::Call,
            Some(discard),
            move |this, via, r| {
                Ok(match r.status {
                    Status::Ok => Ok(decode_body::<T>(via.conn(), &r)?),
                    Status::AppError => Err(CallError::App(decode_body::<E>(via.conn(), &r)?)),
                    other => Err(CallError::Rpc(this.status_error(other, &r.body))),
                })
            },
        );
        async move { call.await? }
    }

    /// Calls a method that returns a stream (`Streaming<T>`): the stream
    /// opens once the call is answered.
    pub fn call_stream<'a, A, T>(
        &'a self,
        method: u16,
        args: A,
    ) -> impl Future<Output = Result<Streaming<T>, Error>> + Send + 'a
    where
        A: Serialize + Send + 'a,
        T: DeserializeOwned + Send + 'static,
    {
        self.invoke(
            method,
            args,
            Shape::Stream,
            None,
            move |this, via, r| match r.status {
                Status::Ok => via.stream(),
                other => Err(this.status_error(other, &r.body)),
            },
        )
    }

    /// Calls a method that returns `Result<Streaming<T>, E>`.
    pub fn call_stream_fallible<'a, A, T, E>(
        &'a self,
        method: u16,
        args: A,
    ) -> impl Future<Output = Result<Streaming<T>, CallError<E>>> + Send + 'a
    where
        A: Serialize + Send + 'a,
        T: DeserializeOwned + Send + 'static,
        E: DeserializeOwned + Send + 'a,
    {
        let call = self.invoke(method, args, Shape::Stream, None, move |this, via, r| {
            Ok(match r.status {
                Status::Ok => via.stream().map_err(CallError::Rpc),
                Status::AppError => Err(CallError::App(decode_body::<E>(via.conn(), &r)?)),
                other => Err(CallError::Rpc(this.status_error(other, &r.body))),
            })
        });
        async move { call.await? }
    }

    /// Calls a `#[oneway]` method: returns once the request is handed to the
    /// connection, without waiting for the server. Oneway calls from one proxy
    /// start on the server in the order they were made.
    #[allow(clippy::manual_async_fn)] // the signature states `Send`
    pub fn call_oneway<'a, A>(
        &'a self,
        method: u16,
        args: A,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a
    where
        A: Serialize + Send + 'a,
    {
        async move {
            let send = async {
                match &self.target {
                    Target::Named { client, .. } => {
                        let link = client.links().live().await?;
                        // A oneway call waits for its lookup: no answer
                        // would tell the caller that the lookup failed.
                        let handle = match self.handle_on(&link).await? {
                            (_, Some(lookup)) => self.confirm(&link, &lookup).await?,
                            (handle, None) => handle,
                        };
                        let mut frame = encode_request(&link.conn, true, handle, method, 0, &args);
                        if awaits_hello(&frame, &link.conn) {
                            link.conn.established().await?;
                            frame = encode_request(&link.conn, true, handle, method, 0, &args);
                        }
                        link.conn.send_oneway(frame?).await
                    }
                    Target::Imported(import) => {
                        let conn = self.imported_conn(import)?;
                        let frame = encode_request(conn, true, import.handle(), method, 0, &args)?;
                        conn.send_oneway(frame).await
                    }
                    Target::Local(service) => {
                        let reply = self.call_local(service, method, args).await?;
                        reply.log_if_error();
                        Ok(())
                    }
                    Target::Balanced(pool) => self.spread_oneway(pool, method, args).await,
                }
            };
            // A timer only if the request has to wait to be queued.
            within(&Deadline::after(self.timeout), pin!(send))
                .await
                .ok_or(Error::Timeout {
                    after: self.timeout,
                })?
        }
    }

    /// The deadline as sent to the server: whole milliseconds, rounded up.
    fn deadline_ms(&self) -> u32 {
        wire::deadline_ms(self.timeout)
    }

    fn imported_conn<'i>(&self, import: &'i Import) -> Result<&'i Arc<Connection>, Error> {
        let conn = import.conn();
        if conn.is_closed() {
            return Err(Error::ConnectionLost {
                reason: format!(
                    "the connection that carried this remote `{}` has closed; remote objects \
                     do not survive a reconnect",
                    self.descriptor.trait_name
                ),
            });
        }
        Ok(conn)
    }

    /// Sends the request (reconnecting and retrying as allowed) under the
    /// call's deadline and turns the response into the call's result with
    /// `finish`, on the connection it came from.
    #[allow(clippy::manual_async_fn)] // the signature states `Send`
    fn invoke<'a, A, Out, F>(
        &'a self,
        method: u16,
        args: A,
        shape: Shape,
        discard: Option<Discard>,
        finish: F,
    ) -> impl Future<Output = Result<Out, Error>> + Send + 'a
    where
        A: Serialize + Send + 'a,
        Out: Send + 'a,
        F: Fn(&Self, Via<'_>, Response) -> Result<Out, Error> + Send + Sync + 'a,
    {
        async move {
            let info = self.descriptor.methods.get(usize::from(method));
            let method_name = info.map_or("?", |m| m.name);
            // With tracing's `log` feature on, even a disabled span costs.
            let span = if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug_span!(
                    "ipc.call",
                    object = %self.name(),
                    method = method_name,
                    id = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            let deadline = Deadline::after(self.timeout);
            let deadline = &deadline;
            let attempts = async {
                match &self.target {
                    Target::Named { client, .. } => {
                        let idempotent = info.is_some_and(|m| m.idempotent);
                        let call = Call {
                            method,
                            shape,
                            discard,
                            deadline,
                        };
                        self.attempts(client, call, args, idempotent, &finish).await
                    }
                    Target::Imported(import) => {
                        let conn = self.imported_conn(import)?;
                        let call = Call {
                            method,
                            shape,
                            discard,
                            deadline,
                        };
                        let (id, response) = self.once(conn, import.handle(), call, args).await?;
                        let mut response = response;
                        let stream = response.stream.take();
                        finish(self, Via::Conn(conn, id, stream), response)
                    }
                    Target::Local(service) => {
                        self.invoke_local(service, method, args, shape, &finish)
                            .await
                    }
                    Target::Balanced(pool) => {
                        let idempotent = info.is_some_and(|m| m.idempotent);
                        let call = Call {
                            method,
                            shape,
                            discard,
                            deadline,
                        };
                        self.spread(pool, call, args, idempotent, &finish).await
                    }
                }
            };
            // The deadline: see `connection::deadline` (no timer per call).
            let attempts = pin!(attempts);
            let timed = within(deadline, attempts);
            // Entering a disabled span on every poll still costs: skip it.
            let result = if span.is_disabled() {
                timed.await
            } else {
                timed.instrument(span).await
            };
            result.ok_or(Error::Timeout {
                after: self.timeout,
            })?
        }
    }

    /// A named object's call: on the client's live connection, sent again
    /// when that is safe.
    async fn attempts<A, Out, F>(
        &self,
        client: &Client,
        call: Call<'_>,
        args: A,
        idempotent: bool,
        finish: &F,
    ) -> Result<Out, Error>
    where
        A: Serialize + Send,
        F: Fn(&Self, Via<'_>, Response) -> Result<Out, Error>,
    {
        let mut attempt = 0;
        // Why the last attempt did not run, if it did not.
        let mut not_run: Option<Error> = None;
        loop {
            // A call sent again gets a connection the same way as a new one:
            // following the reconnect policy. If there is none, a call the
            // server refused fails with that refusal (`ShuttingDown`: it did
            // not run), the root cause.
            let link = match client.links().live().await {
                Ok(link) => link,
                Err(e) => return Err(not_run.take().unwrap_or(e)),
            };
            let (handle, lookup) = self.handle_on(&link).await?;
            let mut frame = self.encode_call(&link.conn, handle, call.method, &args);
            if awaits_hello(&frame, &link.conn) {
                link.conn.established().await?;
                frame = self.encode_call(&link.conn, handle, call.method, &args);
            }
            let (result, left) = self.exchange(&link.conn, frame, call).await;
            // Past its deadline (the sweep ended it): that is the answer,
            // whatever the lookup sent with it says.
            if let Err(e @ Error::Timeout { .. }) = result {
                return Err(e);
            }
            // Sent with its lookup: a failed lookup is the call's error (the
            // server answered the call with it and ran nothing). A server
            // that remembers no more lookups does not know the handle: the
            // call did not run, and goes again to the one the lookup gave.
            if let Some(lookup) = lookup {
                match self.confirm(&link, &lookup).await {
                    Err(e) if !e.is_connection_error() => return Err(e),
                    Ok(_)
                        if matches!(&result, Ok((_, r)) if r.status == Status::UnknownObject)
                            && attempt < MAX_RETRIES =>
                    {
                        attempt += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            // The call never left, or the server says it did not run:
            // sending it again (on a new connection) is safe for any method.
            // If it may have run, only idempotent methods go again.
            let not_run_now = (!left && result.as_ref().is_err_and(Error::is_connection_error))
                || matches!(&result, Ok((_, r)) if r.status == Status::ShuttingDown)
                || matches!(&result, Err(Error::ShuttingDown));
            let retry =
                not_run_now || matches!(&result, Err(e) if idempotent && e.is_connection_error());
            if retry && attempt < MAX_RETRIES {
                attempt += 1;
                tracing::debug!(attempt, not_run = not_run_now, "sending the call again");
                not_run = if not_run_now {
                    Some(result.err().unwrap_or(Error::ShuttingDown))
                } else {
                    None
                };
                continue;
            }
            let (id, mut response) = result?;
            let stream = response.stream.take();
            return finish(self, Via::Conn(&link.conn, id, stream), response);
        }
    }

    /// One request on one connection, answered.
    async fn once<A>(
        &self,
        conn: &Arc<Connection>,
        handle: u32,
        call: Call<'_>,
        args: A,
    ) -> Result<(u64, Response), Error>
    where
        A: Serialize + Send,
    {
        let mut frame = self.encode_call(conn, handle, call.method, &args);
        if awaits_hello(&frame, conn) {
            conn.established().await?;
            frame = self.encode_call(conn, handle, call.method, &args);
        }
        drop(args);
        self.exchange(conn, frame, call).await.0
    }

    /// The request frame for `conn`. Before the server's hello only a frame
    /// of the protocol's minimum size may go out: a caller whose request is
    /// larger (see [`awaits_hello`]) waits for the hello and encodes again.
    /// (Synchronous, so that no borrow of the arguments spans an await.)
    fn encode_call<A>(
        &self,
        conn: &Arc<Connection>,
        handle: u32,
        method: u16,
        args: &A,
    ) -> Result<FrameBuf, Error>
    where
        A: Serialize + ?Sized,
    {
        encode_request(conn, false, handle, method, self.deadline_ms(), args)
    }

    /// Sends the request and waits for its answer: the request id and the
    /// response, and whether the request left (was queued) at all.
    async fn exchange(
        &self,
        conn: &Arc<Connection>,
        frame: Result<FrameBuf, Error>,
        call: Call<'_>,
    ) -> (Result<(u64, Response), Error>, bool) {
        match self.send(conn, frame, call).await {
            Ok(pending) => {
                let id = pending.id();
                (pending.response().await.map(|r| (id, r)), true)
            }
            Err(e) => (Err(e), false),
        }
    }

    /// Queues an encoded request on `conn`.
    async fn send<'c>(
        &self,
        conn: &'c Arc<Connection>,
        frame: Result<FrameBuf, Error>,
        call: Call<'c>,
    ) -> Result<crate::connection::PendingCall<'c>, Error> {
        let opens_stream = matches!(call.shape, Shape::Stream);
        let pending = conn
            .send_call(frame?, call.discard, opens_stream, Some(call.deadline))
            .await?;
        // `Span::current` costs even with tracing off: only when it may log.
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::Span::current().record("id", pending.id());
        }
        Ok(pending)
    }

    /// A call to an object served by this process: no wire, the same
    /// encoding (so it behaves as a remote call would).
    async fn invoke_local<A, Out, F>(
        &self,
        service: &Arc<dyn Service>,
        method: u16,
        args: A,
        shape: Shape,
        finish: &F,
    ) -> Result<Out, Error>
    where
        A: Serialize + Send,
        F: Fn(&Self, Via<'_>, Response) -> Result<Out, Error>,
    {
        let reply = self.call_local(service, method, args).await?;
        match (reply.0, shape) {
            (Outcome::Frame(frame), _) => finish(self, Via::Local(None), local_response(frame)?),
            (Outcome::Stream(source), Shape::Stream) => {
                let opened = Response {
                    status: Status::Ok,
                    body: bytes::Bytes::new(),
                    stream: None,
                };
                finish(self, Via::Local(Some(source)), opened)
            }
            (Outcome::Stream(_), Shape::Call) => Err(Error::Protocol {
                detail: "a stream for a method that returns none".into(),
            }),
        }
    }

    async fn call_local<A>(
        &self,
        service: &Arc<dyn Service>,
        method: u16,
        args: A,
    ) -> Result<crate::service::Reply, Error>
    where
        A: Serialize,
    {
        let bytes = wire::encode_to_vec(&args).map_err(encode_error)?;
        drop(args);
        let future = service
            .call(method, &bytes::Bytes::from(bytes))
            .map_err(|e| Error::BadRequest {
                detail: format!("{e:?}"),
            })?;
        Ok(future.await)
    }

    /// Looks the object up now (on the client's live connection), so a wrong
    /// name or trait fails here rather than at the first call.
    pub(crate) async fn resolve_now(&self) -> Result<(), Error> {
        let Target::Named { client, .. } = &self.target else {
            return Ok(());
        };
        tokio::time::timeout(self.timeout, async {
            let link = client.links().live().await?;
            match self.handle_on(&link).await? {
                (_, Some(lookup)) => self.confirm(&link, &lookup).await.map(|_| ()),
                (_, None) => Ok(()),
            }
        })
        .await
        .map_err(|_| Error::Timeout {
            after: self.timeout,
        })?
    }

    /// The object's handle on `link`'s connection, looked up (and the trait
    /// checked) once per connection: known, or queued with the lookup whose
    /// answer is still to come (calls to it may go out meanwhile).
    async fn handle_on(&self, link: &Link) -> Result<(u32, Option<Arc<Lookup>>), Error> {
        let Target::Named { cached, .. } = &self.target else {
            return Err(Error::Protocol {
                detail: "only named objects are looked up".into(),
            });
        };
        let cached = cached.load(Ordering::Acquire);
        if cached >> 32 == u64::from(link.generation) {
            return Ok((cached as u32, None));
        }
        // Once per connection: kept out of line.
        Box::pin(self.look_up(link)).await
    }

    async fn look_up(&self, link: &Link) -> Result<(u32, Option<Arc<Lookup>>), Error> {
        let Target::Named { name, .. } = &self.target else {
            return Err(Error::Protocol {
                detail: "only named objects are looked up".into(),
            });
        };
        let lookup = link.lookups.get(&link.conn, name, self.descriptor);
        match lookup.sent().await {
            Progress::Done(Ok(handle)) => {
                self.remember(link, handle);
                Ok((handle, None))
            }
            Progress::Done(Err(e)) => Err(e.duplicate()),
            Progress::Sent(handle) => Ok((handle, Some(lookup))),
            Progress::Unsent => Err(Error::ConnectionLost {
                reason: "the lookup was not sent".into(),
            }),
        }
    }

    /// Waits for the answer of a lookup sent ahead of a call, and caches
    /// the handle it gives.
    async fn confirm(&self, link: &Link, lookup: &Lookup) -> Result<u32, Error> {
        let handle = lookup.answer().await?;
        self.remember(link, handle);
        Ok(handle)
    }

    /// Caches the object's handle on `link`'s connection.
    fn remember(&self, link: &Link, handle: u32) {
        if let Target::Named { cached, .. } = &self.target {
            cached.store(
                (u64::from(link.generation) << 32) | u64::from(handle),
                Ordering::Release,
            );
        }
    }

    fn status_error(&self, status: Status, body: &[u8]) -> Error {
        match status {
            Status::DeadlineExceeded => Error::Timeout {
                after: self.timeout,
            },
            other => Error::from_status(other, body, self.name()),
        }
    }
}

/// The server's directory, through `client`.
pub(super) async fn directory(client: &Client) -> Result<Vec<ObjectInfo>, Error> {
    system_call(client, wire::SYSTEM_LIST, &(), |status, _| {
        Error::Protocol {
            detail: format!("the directory answered with status {status:?}"),
        }
    })
    .await
}

/// The schema of the object exposed as `name`, through `client`.
pub(super) async fn schema(client: &Client, name: &str) -> Result<ObjectSchema, Error> {
    system_call(client, wire::SYSTEM_SCHEMA, name, |status, body| {
        Error::from_status(status, body, name)
    })
    .await
}

/// Calls method `method` of the system object on `client`'s current
/// connection, within the client's call timeout; a reply other than `Ok`
/// becomes `refused(status, body)`.
async fn system_call<A, R>(
    client: &Client,
    method: u16,
    args: &A,
    refused: impl FnOnce(Status, &[u8]) -> Error,
) -> Result<R, Error>
where
    A: Serialize + ?Sized,
    R: DeserializeOwned,
{
    let timeout = client.call_timeout();
    let call = async {
        let link = client.links().live().await?;
        let frame = encode_request(
            &link.conn,
            false,
            wire::SYSTEM_OBJECT,
            method,
            wire::deadline_ms(timeout),
            args,
        )?;
        let response = link
            .conn
            .send_call(frame, None, false, None)
            .await?
            .response()
            .await?;
        match response.status {
            Status::Ok => decode_body(Some(&link.conn), &response),
            other => Err(refused(other, &response.body)),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Timeout { after: timeout })?
}

/// A request frame for `conn`, its arguments encoded in its scope (remote
/// objects among them are exported on it) and stopped at its peer's limit.
fn encode_request<A: Serialize + ?Sized>(
    conn: &Arc<Connection>,
    oneway: bool,
    handle: u32,
    method: u16,
    deadline_ms: u32,
    args: &A,
) -> Result<FrameBuf, Error> {
    scope::with(conn.scope(), || {
        FrameBuf::request(
            oneway,
            handle,
            method,
            deadline_ms,
            args,
            conn.peer_max_frame(),
        )
    })
    .map_err(encode_error)
}

/// Whether a request did not fit only because the server's hello, with its
/// real frame limit, has not arrived yet.
fn awaits_hello(frame: &Result<FrameBuf, Error>, conn: &Connection) -> bool {
    matches!(frame, Err(Error::FrameTooLarge { .. })) && !conn.is_established()
}

fn encode_error(e: EncodeError) -> Error {
    if let Some(detail) = scope::take_refusal() {
        return Error::Overloaded { detail };
    }
    match e {
        EncodeError::TooLarge { size, limit } => Error::FrameTooLarge { size, limit },
        other => Error::Encode {
            detail: other.to_string(),
        },
    }
}

/// Decodes a response's body, in `conn`'s scope if it came over one.
fn decode_body<T: DeserializeOwned>(
    conn: Option<&Arc<Connection>>,
    response: &Response,
) -> Result<T, Error> {
    let decode = || wire::decode_shared(&response.body);
    let decoded = match conn {
        Some(conn) => scope::with(conn.scope(), decode),
        None => decode(),
    };
    decoded.map_err(|e| Error::Decode {
        detail: e.to_string(),
    })
}

/// The response frame of a local call, as if received.
fn local_response(frame: FrameBuf) -> Result<Response, Error> {
    let bytes = frame.into_frame().to_contiguous();
    match wire::parse(bytes.slice(wire::LENGTH_PREFIX..)) {
        Ok(wire::Message::Response { status, body, .. }) => Ok(Response {
            status,
            body,
            stream: None,
        }),
        _ => Err(Error::Protocol {
            detail: "a local call produced no response".into(),
        }),
    }
}

/// Decodes and drops a late reply of a method returning `R`.
fn discard_reply<R: DeserializeOwned>(conn: &Arc<Connection>, response: &Response) {
    if response.status == Status::Ok {
        let _ = decode_body::<R>(Some(conn), response);
    }
}

/// Decodes and drops a late reply of a method returning `Result<T, E>`.
fn discard_result<T: DeserializeOwned, E: DeserializeOwned>(
    conn: &Arc<Connection>,
    response: &Response,
) {
    match response.status {
        Status::Ok => {
            let _ = decode_body::<T>(Some(conn), response);
        }
        Status::AppError => {
            let _ = decode_body::<E>(Some(conn), response);
        }
        _ => {}
    }
}
