//! [`Replicas`]: one service served by several servers, and proxies that
//! spread their calls over them.
//!
//! The set knows each replica by an id (a registry's instance id) and an
//! [`Endpoint`]. For each one it opens a connection of its own in the
//! background and looks the object up (checking its trait); only then may
//! calls go to it. A replica whose connection fails, or that sends GoAway,
//! gets no new call from that moment, and is connected again in the
//! background for as long as it stays in the set. Who is in the set is told
//! from outside ([`Replicas::apply`], [`Replicas::follow`]): the
//! `ipc-registry` crate feeds it from a registry's watch.
//!
//! How one call goes out — which replica, when it goes to another — is in
//! `object_ref/balanced.rs`.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ClientBuilder, Link, ObjectRef, Proxy};
use crate::config::Reconnect;
use crate::error::Error;
use crate::object::ObjectDescriptor;
use crate::transport::Address;

/// How a balanced proxy chooses the replica for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Draw two ready replicas at random and take the one with fewer calls
    /// in flight through this set (the first drawn on a tie). The default:
    /// it follows load — a slow or busy replica gets fewer calls — at the
    /// cost of two counters per call, with no shared state between callers
    /// to contend on.
    #[default]
    PowerOfTwoChoices,
    /// Each ready replica in turn, whatever its load.
    RoundRobin,
}

/// Where one replica is and what it should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// The replica's server.
    pub addr: Address,
    /// The name the object is exposed under there.
    pub object: String,
    /// The trait the replica says it serves, if known (from its
    /// registration): another name than the proxy's excludes the replica
    /// before connecting.
    pub trait_name: Option<String>,
    /// The trait's fingerprint the replica says it serves, if known:
    /// another value than the proxy's excludes the replica before connecting.
    pub fingerprint: Option<u64>,
}

impl Endpoint {
    /// The object `object` on the server at `addr`, of a trait not told in
    /// advance (checked when the replica is connected).
    pub fn new(addr: impl Into<Address>, object: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            object: object.into(),
            trait_name: None,
            fingerprint: None,
        }
    }

    /// The same endpoint, saying which trait (and version) it serves.
    pub fn with_trait(mut self, trait_name: impl Into<String>, fingerprint: u64) -> Self {
        self.trait_name = Some(trait_name.into());
        self.fingerprint = Some(fingerprint);
        self
    }
}

/// A change to who is in a [`Replicas`] set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Membership {
    /// Exactly these replicas, by id: the others leave. A replica whose
    /// endpoint is unchanged keeps its connection.
    Reset(Vec<(String, Endpoint)>),
    /// This replica joined, or its endpoint changed.
    Joined(String, Endpoint),
    /// This replica left. Calls already on it finish; its connection closes
    /// after them.
    Left(String),
}

/// Where a replica stands, as [`Replicas::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaState {
    /// Its first connection and lookup are under way. Calls that find no
    /// ready replica wait for these (within their deadline).
    Connecting,
    /// Calls may go to it.
    Ready,
    /// It sent GoAway: calls on it finish, no new call goes to it.
    Draining,
    /// Its connection failed or was refused; attempts go on in the
    /// background while it stays in the set.
    Down,
    /// It serves another trait, another version of it, or no such object:
    /// never used (and logged when found).
    Rejected,
}

/// One replica of a [`Replicas`] set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Its id in the set.
    pub id: String,
    /// Its server's address.
    pub addr: String,
    /// Where it stands.
    pub state: ReplicaState,
    /// Calls through this set running on it now.
    pub in_flight: usize,
    /// Why it is down or rejected.
    pub detail: Option<String>,
}

/// Wait before connecting again to a replica after the first failure;
/// doubled after each, up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two connection attempts to a replica that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Settings of a [`Replicas`] set.
#[derive(Debug, Clone)]
pub struct ReplicasBuilder {
    service: String,
    policy: Policy,
    client: ClientBuilder,
}

impl ReplicasBuilder {
    /// A set for `service` (the name errors and logs use), with the default
    /// policy ([`Policy::PowerOfTwoChoices`]) and default client settings.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            policy: Policy::default(),
            client: ClientBuilder::default(),
        }
    }

    /// How each call's replica is chosen. Default
    /// [`Policy::PowerOfTwoChoices`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The settings of each replica's connection (timeouts, limits, TLS, a
    /// shared key) and the proxies' call deadline
    /// ([`ClientBuilder::call_timeout`]). Default: `ClientBuilder`'s. Its
    /// address is not used, and neither is its reconnect policy: a replica
    /// that is down is connected again in the background (50 ms, doubling
    /// up to 2 s between attempts) while calls go to the others.
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.client = client;
        self
    }

    /// The set, empty, for proxies of type `P`.
    pub fn build<P: Proxy>(self) -> Replicas<P> {
        let timeout = self.client.call_timeout;
        let settings = self.client.reconnect(Reconnect::NEVER);
        Replicas {
            pool: Arc::new(Pool {
                service: Arc::from(self.service),
                descriptor: P::DESCRIPTOR,
                policy: self.policy,
                settings,
                timeout,
                ready: RwLock::default(),
                members: Mutex::default(),
                version: watch::Sender::new(0),
                next_turn: AtomicUsize::new(0),
                next_serial: AtomicU64::new(1),
                closing: CancellationToken::new(),
            }),
            _proxy: PhantomData,
        }
    }
}

/// The replicas of one service, and the proxies that spread calls over
/// them: [`Replicas::proxy`] returns the usual `{Trait}Proxy`, with the same
/// methods and errors, whose every call goes to one ready replica chosen by
/// the [`Policy`].
///
/// - A call that fails because its replica's connection failed goes to
///   another replica when the usual rules say it may be sent again: it did
///   not run (never sent, refused by a server shutting down), or the
///   method is `#[idempotent]` — up to twice. Otherwise it fails with the
///   usual connection error.
/// - A replica whose connection fails is taken out at once, and connected
///   again in the background; one that sends GoAway gets no new call.
/// - With no replica to send a call to, it fails at once with
///   [`Error::NoReplicas`] naming the service — unless a replica's first
///   connection is under way: then it waits for that (within its deadline).
/// - A stream a call opened, and an object it returned, live on their
///   replica's connection, which closes once the replica has left the set
///   and its calls are done.
///
/// Cheap to clone; proxies keep the set alive. The `ipc-registry` crate
/// keeps a set current from a registry (`locate_all`); here it is filled by
/// hand:
///
/// ```
/// use ipc_core::client::{Endpoint, Membership, Replicas, ReplicasBuilder};
/// use ipc_core::{expose, Server};
///
/// #[expose]
/// pub trait Echo {
///     /// Returns `s`.
///     async fn echo(&self, s: String) -> String;
/// }
/// struct E;
/// impl Echo for E {
///     async fn echo(&self, s: String) -> String { s }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let a = Server::builder().addr("127.0.0.1:0").expose(EchoServer::new(E)).start().await?;
/// let b = Server::builder().addr("127.0.0.1:0").expose(EchoServer::new(E)).start().await?;
///
/// let replicas: Replicas<EchoProxy> = ReplicasBuilder::new("echo").build();
/// replicas.apply(Membership::Reset(vec![
///     ("a".into(), Endpoint::new(a.local_addr(), "Echo")),
///     ("b".into(), Endpoint::new(b.local_addr(), "Echo")),
/// ]));
/// replicas.settled().await;
///
/// let echo = replicas.proxy();
/// assert_eq!(echo.echo("hi".into()).await?, "hi");
/// # a.stop().await; b.stop().await;
/// # Ok(()) }
/// ```
pub struct Replicas<P> {
    pool: Arc<Pool>,
    _proxy: PhantomData<fn() -> P>,
}

impl<P> Clone for Replicas<P> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            _proxy: PhantomData,
        }
    }
}

impl<P> fmt::Debug for Replicas<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("service", &self.pool.service)
            .field("policy", &self.pool.policy)
            .field("replicas", &self.status())
            .finish()
    }
}

impl<P: Proxy> Replicas<P> {
    /// A proxy whose calls are spread over the set's ready replicas.
    pub fn proxy(&self) -> P {
        P::from_object(ObjectRef::balanced(
            self.pool.clone(),
            self.pool.descriptor,
            self.pool.timeout,
        ))
    }
}

impl<P> Replicas<P> {
    /// The service's name.
    pub fn service(&self) -> &str {
        &self.pool.service
    }

    /// Applies a change to who is in the set. Replicas that join are
    /// connected in the background; must be called within a Tokio runtime.
    pub fn apply(&self, change: Membership) {
        self.pool.apply(change);
    }

    /// Applies each change `changes` yields, in a task of its own, for as
    /// long as the set lives (or until the stream ends). Calls that find no
    /// ready replica wait for its first change.
    pub fn follow<S>(&self, changes: S)
    where
        S: Stream<Item = Membership> + Send + 'static,
    {
        self.pool.members().awaiting += 1;
        let pool = Arc::downgrade(&self.pool);
        let closing = self.pool.closing.clone();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            // This stream has not spoken yet.
            let mut silent = true;
            loop {
                let change = tokio::select! {
                    change = changes.next() => change,
                    _ = closing.cancelled() => return,
                };
                let Some(pool) = pool.upgrade() else { return };
                if std::mem::take(&mut silent) {
                    pool.members().awaiting -= 1;
                }
                match change {
                    Some(change) => pool.apply(change),
                    None => {
                        pool.changed();
                        return;
                    }
                }
            }
        });
    }

    /// Every replica in the set, by id.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.pool.status()
    }

    /// How many replicas calls may go to now.
    pub fn ready(&self) -> usize {
        self.status()
            .iter()
            .filter(|r| r.state == ReplicaState::Ready)
            .count()
    }

    /// Waits until `done(&status)` holds, checking after each change the
    /// set makes (a replica joins, leaves, connects, goes down). No
    /// deadline: wrap it in `tokio::time::timeout`.
    pub async fn wait_until<F>(&self, mut done: F)
    where
        F: FnMut(&[ReplicaStatus]) -> bool,
    {
        let mut version = self.pool.version.subscribe();
        loop {
            if done(&self.status()) {
                return;
            }
            if version.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until no replica's first connection is under way and a
    /// followed stream ([`Replicas::follow`]) has delivered its first
    /// change. No deadline of its own: each connection attempt is bounded
    /// by the connect timeout.
    pub async fn settled(&self) {
        let mut version = self.pool.version.subscribe();
        while self.pool.pending() {
            if version.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The shared state behind a [`Replicas`] set and its proxies.
pub(crate) struct Pool {
    service: Arc<str>,
    descriptor: &'static ObjectDescriptor,
    policy: Policy,
    /// Each replica's connection settings (reconnect off).
    settings: ClientBuilder,
    /// The proxies' call deadline.
    timeout: Duration,
    /// The replicas calls may go to, rebuilt on every change (rare); read
    /// by every call.
    ready: RwLock<Vec<Arc<Live>>>,
    members: Mutex<Members>,
    /// Bumped on every change, for whoever waits for one.
    version: watch::Sender<u64>,
    /// Round robin's next turn.
    next_turn: AtomicUsize,
    /// Numbers each replica's incarnation (a new endpoint is a new one).
    next_serial: AtomicU64,
    /// Cancelled when the set is dropped: its background tasks end.
    closing: CancellationToken,
}

#[derive(Default)]
struct Members {
    by_id: HashMap<String, Member>,
    /// Followed streams that have not yet delivered their first change.
    awaiting: usize,
}

struct Member {
    serial: u64,
    endpoint: Endpoint,
    state: State,
}

enum State {
    /// The first connection and lookup are under way.
    Connecting,
    Ready(Arc<Live>),
    Down(String),
    Rejected(String),
}

/// A replica calls may go to: its connection and the object on it.
pub(crate) struct Live {
    pub(crate) serial: u64,
    id: Arc<str>,
    /// The object, looked up by name on the replica's own client (which
    /// never reconnects: a new connection is a new `Live`).
    pub(crate) object: ObjectRef,
    pub(crate) link: Arc<Link>,
    in_flight: AtomicUsize,
    /// Reported lost already.
    lost: AtomicBool,
}

impl Live {
    /// Counts a call on this replica until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Whether new calls may go to it: open and not going away. (Atomics
    /// only: a closed connection's outbox is closed too.)
    fn open(&self) -> bool {
        !self.link.conn.is_going_away() && !self.link.conn.outbox.is_closed()
    }
}

/// A call in flight on a replica (see [`Live::busy`]).
pub(crate) struct Busy<'a>(&'a Live);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.closing.cancel();
    }
}

/// A cheap random number (xorshift, one state per thread): picking a
/// replica must not cost a lock or a system call.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1,
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

impl Pool {
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // Critical sections are map updates that cannot panic halfway.
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells waiters something changed.
    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether calls that find no ready replica should wait: a first
    /// connection is under way, or a followed stream is still to speak.
    fn pending(&self) -> bool {
        let members = self.members();
        members.awaiting > 0
            || members
                .by_id
                .values()
                .any(|m| matches!(m.state, State::Connecting))
    }

    /// Rebuilds the list calls choose from; the caller holds `members`.
    fn rebuild(&self, members: &Members) {
        let mut ready: Vec<Arc<Live>> = members
            .by_id
            .values()
            .filter_map(|m| match &m.state {
                State::Ready(live) => Some(live.clone()),
                _ => None,
            })
            .collect();
        ready.sort_by(|a, b| a.id.cmp(&b.id));
        *self.ready.write().unwrap_or_else(|p| p.into_inner()) = ready;
    }

    fn apply(self: &Arc<Self>, change: Membership) {
        let mut members = self.members();
        match change {
            Membership::Reset(list) => {
                let keep: std::collections::HashSet<&str> =
                    list.iter().map(|(id, _)| id.as_str()).collect();
                members.by_id.retain(|id, _| {
                    let stays = keep.contains(id.as_str());
                    if !stays {
                        tracing::debug!(service = %self.service, %id, "replica left");
                    }
                    stays
                });
                for (id, endpoint) in list {
                    self.join(&mut members, id, endpoint);
                }
            }
            Membership::Joined(id, endpoint) => self.join(&mut members, id, endpoint),
            Membership::Left(id) => {
                if members.by_id.remove(&id).is_some() {
                    tracing::debug!(service = %self.service, %id, "replica left");
                }
            }
        }
        self.rebuild(&members);
        drop(members);
        self.changed();
    }

    /// Adds or updates one replica; the caller holds `members`.
    fn join(self: &Arc<Self>, members: &mut Members, id: String, endpoint: Endpoint) {
        if members
            .by_id
            .get(&id)
            .is_some_and(|m| m.endpoint == endpoint)
        {
            return;
        }
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let d = self.descriptor;
        let wrong_trait = endpoint
            .trait_name
            .as_deref()
            .is_some_and(|t| t != d.trait_name);
        let wrong_version = endpoint.fingerprint.is_some_and(|f| f != d.fingerprint);
        let state = if wrong_trait || wrong_version {
            let reason = format!(
                "registered for trait `{}` (fingerprint {:016x}), this proxy speaks `{}` \
                 (fingerprint {:016x})",
                endpoint.trait_name.as_deref().unwrap_or("?"),
                endpoint.fingerprint.unwrap_or_default(),
                d.trait_name,
                d.fingerprint,
            );
            tracing::warn!(service = %self.service, %id, addr = %endpoint.addr, %reason,
                "replica of another trait or version; it will never be chosen");
            State::Rejected(reason)
        } else {
            tracing::debug!(service = %self.service, %id, addr = %endpoint.addr, "replica joined");
            self.spawn_connect(id.clone(), serial, endpoint.clone(), false);
            State::Connecting
        };
        members.by_id.insert(
            id,
            Member {
                serial,
                endpoint,
                state,
            },
        );
    }

    /// Connects to a replica in the background until it is connected,
    /// rejected or gone; `again`: it was connected before (wait first).
    fn spawn_connect(self: &Arc<Self>, id: String, serial: u64, endpoint: Endpoint, again: bool) {
        let pool = Arc::downgrade(self);
        let closing = self.closing.clone();
        let settings = self.settings.clone();
        let descriptor = self.descriptor;
        let timeout = self.timeout;
        tokio::spawn(async move {
            let mut failures: u32 = u32::from(again);
            loop {
                if failures > 0 {
                    let wait = INITIAL_BACKOFF
                        .saturating_mul(1 << (failures - 1).min(8))
                        .min(MAX_BACKOFF);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = closing.cancelled() => return,
                    }
                    // Still wanted?
                    let Some(pool) = pool.upgrade() else { return };
                    if !pool.wants(&id, serial) {
                        return;
                    }
                }
                let attempt = connect_replica(settings.clone(), &endpoint, descriptor, timeout);
                let outcome = tokio::select! {
                    outcome = attempt => outcome,
                    _ = closing.cancelled() => return,
                };
                let Some(pool) = pool.upgrade() else { return };
                match outcome {
                    Ok((object, link)) => {
                        pool.connected(&id, serial, object, link);
                        return;
                    }
                    Err(e @ (Error::TraitMismatch { .. } | Error::UnknownObject { .. })) => {
                        pool.set_rejected(&id, serial, &e);
                        return;
                    }
                    Err(e) => {
                        if !pool.set_down(&id, serial, &e, failures == 0) {
                            return;
                        }
                        failures = failures.saturating_add(1);
                    }
                }
            }
        });
    }

    /// Whether replica `id` is still this incarnation and not ready.
    fn wants(&self, id: &str, serial: u64) -> bool {
        self.members()
            .by_id
            .get(id)
            .is_some_and(|m| m.serial == serial && !matches!(m.state, State::Ready(_)))
    }

    fn connected(self: &Arc<Self>, id: &str, serial: u64, object: ObjectRef, link: Arc<Link>) {
        let mut members = self.members();
        let Some(member) = members.by_id.get_mut(id).filter(|m| m.serial == serial) else {
            return;
        };
        tracing::debug!(service = %self.service, %id, addr = %member.endpoint.addr, "replica ready");
        let live = Arc::new(Live {
            serial,
            id: Arc::from(id),
            object,
            link,
            in_flight: AtomicUsize::new(0),
            lost: AtomicBool::new(false),
        });
        member.state = State::Ready(live.clone());
        self.rebuild(&members);
        drop(members);
        self.changed();
        self.watch_connection(&live);
    }

    /// Takes `live` out as soon as its connection ends, calls or not. The
    /// task holds neither the replica nor the set, so it keeps neither
    /// alive; it ends with the connection.
    fn watch_connection(self: &Arc<Self>, live: &Arc<Live>) {
        let conn = live.link.conn.clone();
        let live = Arc::downgrade(live);
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            conn.closed().await;
            if let (Some(pool), Some(live)) = (pool.upgrade(), live.upgrade()) {
                pool.lost(&live);
            }
        });
    }

    fn set_rejected(&self, id: &str, serial: u64, error: &Error) {
        let mut members = self.members();
        let Some(member) = members.by_id.get_mut(id).filter(|m| m.serial == serial) else {
            return;
        };
        tracing::warn!(service = %self.service, %id, addr = %member.endpoint.addr, %error,
            "replica does not serve this trait; it will never be chosen");
        member.state = State::Rejected(error.to_string());
        self.rebuild(&members);
        drop(members);
        self.changed();
    }

    /// Records a failed attempt; false if the replica is no longer wanted.
    fn set_down(&self, id: &str, serial: u64, error: &Error, first: bool) -> bool {
        let mut members = self.members();
        let Some(member) = members.by_id.get_mut(id).filter(|m| m.serial == serial) else {
            return false;
        };
        if first {
            tracing::warn!(service = %self.service, %id, addr = %member.endpoint.addr, %error,
                "cannot reach replica; retrying in the background");
        } else {
            tracing::debug!(service = %self.service, %id, %error, "replica still unreachable");
        }
        let was_connecting = matches!(member.state, State::Connecting);
        member.state = State::Down(error.to_string());
        if was_connecting {
            drop(members);
            self.changed();
        }
        true
    }

    /// A ready replica's connection failed or is going away: no new call
    /// goes to it, and it is connected again in the background.
    pub(crate) fn lost(self: &Arc<Self>, live: &Arc<Live>) {
        if live.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut members = self.members();
        let Some(member) = members.by_id.get_mut(&*live.id) else {
            return;
        };
        if !matches!(&member.state, State::Ready(l) if Arc::ptr_eq(l, live)) {
            return;
        }
        let reason = if live.link.conn.is_going_away() {
            "the replica is shutting down (GoAway)".to_owned()
        } else {
            live.link.conn.refusal().to_string()
        };
        tracing::info!(service = %self.service, id = %live.id, addr = %member.endpoint.addr,
            %reason, "replica taken out; reconnecting in the background");
        member.state = State::Down(reason);
        self.spawn_connect(
            live.id.to_string(),
            live.serial,
            member.endpoint.clone(),
            true,
        );
        self.rebuild(&members);
        drop(members);
        self.changed();
    }

    /// The replica turned out not to serve this trait (its lookup failed).
    pub(crate) fn reject(&self, live: &Live, error: &Error) {
        self.set_rejected(&live.id, live.serial, error);
    }

    /// A ready replica for one call, not among `tried`, by the policy; or
    /// none.
    fn pick(self: &Arc<Self>, tried: &[u64]) -> Option<Arc<Live>> {
        let mut closed: Option<Arc<Live>> = None;
        let chosen = {
            let ready = self.ready.read().unwrap_or_else(|p| p.into_inner());
            let n = ready.len();
            let mut usable = |live: &Arc<Live>| {
                if tried.contains(&live.serial) {
                    return false;
                }
                let open = live.open();
                if !open && closed.is_none() && !live.lost.load(Ordering::Relaxed) {
                    closed = Some(live.clone());
                }
                open
            };
            let chosen = match self.policy {
                Policy::PowerOfTwoChoices if n >= 2 => {
                    let r = random();
                    let i = (r % n as u64) as usize;
                    let mut j = ((r >> 32) % (n as u64 - 1)) as usize;
                    if j >= i {
                        j += 1;
                    }
                    let (a, b) = (&ready[i], &ready[j]);
                    match (usable(a), usable(b)) {
                        (true, true) => {
                            let busier = a.in_flight.load(Ordering::Relaxed)
                                > b.in_flight.load(Ordering::Relaxed);
                            Some(if busier { b } else { a })
                        }
                        (true, false) => Some(a),
                        (false, true) => Some(b),
                        (false, false) => None,
                    }
                }
                Policy::RoundRobin if n > 0 => {
                    let start = self.next_turn.fetch_add(1, Ordering::Relaxed);
                    (0..n).map(|k| &ready[(start + k) % n]).find(|l| usable(l))
                }
                _ => None,
            };
            // The drawn ones could not take it: any that can.
            let chosen = match chosen {
                Some(live) => Some(live),
                None if n > 0 => {
                    let start = random() as usize;
                    (0..n).map(|k| &ready[(start + k) % n]).find(|l| usable(l))
                }
                None => None,
            };
            chosen.cloned()
        };
        if let Some(live) = closed {
            self.lost(&live);
        }
        chosen
    }

    /// A replica for one call: one ready now, or once a first connection
    /// under way completes; else [`Error::NoReplicas`].
    pub(crate) async fn choose(self: &Arc<Self>, tried: &[u64]) -> Result<Arc<Live>, Error> {
        if let Some(live) = self.pick(tried) {
            return Ok(live);
        }
        let mut version = self.version.subscribe();
        loop {
            if let Some(live) = self.pick(tried) {
                return Ok(live);
            }
            if !self.pending() || version.changed().await.is_err() {
                // A caller that retries in a loop must still let other
                // tasks (the watch that brings replicas back) run.
                tokio::task::consume_budget().await;
                return Err(Error::NoReplicas {
                    service: self.service.to_string(),
                });
            }
        }
    }

    fn status(&self) -> Vec<ReplicaStatus> {
        let members = self.members();
        let mut all: Vec<ReplicaStatus> = members
            .by_id
            .iter()
            .map(|(id, m)| {
                let (state, in_flight, detail) = match &m.state {
                    State::Connecting => (ReplicaState::Connecting, 0, None),
                    State::Ready(live) => {
                        let state = if live.open() {
                            ReplicaState::Ready
                        } else if live.link.conn.is_going_away() {
                            ReplicaState::Draining
                        } else {
                            ReplicaState::Down
                        };
                        (state, live.in_flight.load(Ordering::Relaxed), None)
                    }
                    State::Down(why) => (ReplicaState::Down, 0, Some(why.clone())),
                    State::Rejected(why) => (ReplicaState::Rejected, 0, Some(why.clone())),
                };
                ReplicaStatus {
                    id: id.clone(),
                    addr: m.endpoint.addr.to_string(),
                    state,
                    in_flight,
                    detail,
                }
            })
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

/// One attempt to connect to a replica and look its object up (checking
/// the trait).
async fn connect_replica(
    settings: ClientBuilder,
    endpoint: &Endpoint,
    descriptor: &'static ObjectDescriptor,
    timeout: Duration,
) -> Result<(ObjectRef, Arc<Link>), Error> {
    let client = settings.addr(endpoint.addr.clone()).connect().await?;
    let link = client.links().current();
    let object = ObjectRef::named(client, &endpoint.object, descriptor, timeout);
    object.resolve_now().await?;
    Ok((object, link))
}
