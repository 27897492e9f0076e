//! A whole server connection fed the fuzzer's bytes.
//!
//! One server per process (no key, small limits so the fuzzer reaches them)
//! exposes `ipc_fuzz::Target` as handle 1: plain calls, finite, endless and
//! panicking streams, returned objects, a stream of objects, callbacks the
//! server calls and a stream it consumes, a panic, a call that never ends,
//! a oneway call. For each input a fresh in-memory connection is served;
//! the harness writes a valid client Hello and a lookup (unless the input
//! says not to), then the input's bytes, reads what the server writes until it closes or
//! falls quiet, closes its end, and checks:
//!
//! - nothing panicked in the server (libFuzzer's panic hook aborts; the
//!   objects' own panics do not run it);
//! - with `IPC_FUZZ_CHECK_EXPORTS` set, while the connection is open and
//!   quiet: the server exports no object the client was not told of (in a
//!   reply or a stream item) or has released, beyond one item per open
//!   stream encoded ahead of its credit;
//! - when the client reads nothing and replies are left waiting, the
//!   server drops the connection by itself within two idle periods (1 s
//!   each, virtual), as the README's `idle_timeout` row says;
//! - once the client's end is closed, every counter the connection took is
//!   given back within 1 s (virtual): connections, calls in flight,
//!   streams, exported objects, queued reply bytes.
//!
//! Input: the first byte is a set of flags, the rest is written as is.
//!
//! | bit | meaning |
//! |---|---|
//! | 0x01 | no Hello (nor lookup) from the harness: the input may send its own |
//! | 0x02 | never read what the server writes (replies back up) |
//! | 0x04 | write in pieces of 1 to 13 bytes, letting the server run between |
//! | 0x08 | announce the smallest frame limit (1 KiB) instead of 64 KiB |
//! | 0x10 | shut down the write side after the input (end of stream) |
//! | 0x20 | the Hello says "no key" explicitly (a trailing `00`) |
//! | 0x40 | no lookup after the Hello (handle 1 then names nothing) |
//!
//! Unless told otherwise the harness sends, before the input, its Hello and
//! a lookup of `Target` as request 1: handle 1 is then `Target`, and the
//! input's request ids start at 2 (ids must increase).
//!
//! All waits are in the paused runtime's virtual time (see `ipc_fuzz`).

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use std::collections::HashSet;

use bytes::BytesMut;
use ipc_core::ServerHandle;
use ipc_core::wire::{self, Message};
use ipc_fuzz::{Drained, Objects, frames};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;

/// Nothing from the server for this long (virtual time): it has done all it
/// can without a timer, and no timer of its is this close.
const QUIET: Duration = Duration::from_millis(20);
/// The server's idle period (virtual time: waiting for it costs nothing).
const IDLE: Duration = Duration::from_secs(1);
/// Most bytes read from one connection before the harness closes it (an
/// endless stream with a large grant would go on for ever).
const READ_BUDGET: usize = 256 * 1024;

fn server() -> &'static ServerHandle {
    static SERVER: OnceLock<ServerHandle> = OnceLock::new();
    SERVER.get_or_init(|| {
        ipc_fuzz::start_server(Objects::default(), |b| {
            b.max_frame_size(64 * 1024)
                .write_buffer(16 * 1024)
                .max_in_flight(16)
                .max_streams(4)
                .max_objects(8)
                .stream_window(4096)
                .handshake_timeout(Duration::from_millis(100))
                .idle_timeout(Some(IDLE))
        })
    })
}

struct Flags(u8);

impl Flags {
    fn hello(&self) -> bool {
        self.0 & 0x01 == 0
    }
    fn reads(&self) -> bool {
        self.0 & 0x02 == 0
    }
    fn chunked(&self) -> bool {
        self.0 & 0x04 != 0
    }
    fn max_frame(&self) -> u32 {
        if self.0 & 0x08 != 0 { 1024 } else { 64 * 1024 }
    }
    fn half_close(&self) -> bool {
        self.0 & 0x10 != 0
    }
    fn explicit_no_key(&self) -> bool {
        self.0 & 0x20 != 0
    }
    fn lookup(&self) -> bool {
        self.0 & 0x40 == 0
    }
}

async fn session(server: &ServerHandle, flags: Flags, input: &[u8]) {
    let (mut read, mut write) = ipc_fuzz::connect(server);
    let mut bytes = Vec::with_capacity(64 + input.len());
    if flags.hello() {
        let auth: &[u8] = if flags.explicit_no_key() { &[0] } else { &[] };
        bytes.extend_from_slice(&ipc_fuzz::preamble(flags.max_frame(), auth, flags.lookup()));
    }
    bytes.extend_from_slice(input);

    // Write and read at once (the server stops reading while its replies
    // cannot be sent). The exchange ends when the reader does: the server
    // closed, fell quiet, or wrote the whole budget. A writer still blocked
    // then (behind a server that stopped reading) is simply dropped.
    let mut told = HashSet::new();
    let writing = async {
        if ipc_fuzz::send(&mut write, &bytes, flags.chunked()).await && flags.half_close() {
            let _ = write.shutdown().await;
        }
        std::future::pending::<()>().await
    };
    let reading = async {
        if flags.reads() {
            ipc_fuzz::drain_frames(&mut read, QUIET, READ_BUDGET, |f| told_of(f, &mut told)).await
        } else {
            tokio::time::sleep(QUIET).await;
            Drained::Quiet
        }
    };
    let drained = tokio::select! {
        d = reading => d,
        () = writing => unreachable!("the writer never ends"),
    };
    if check_exports() && flags.hello() && flags.reads() && drained == Drained::Quiet {
        exports_were_told(server, &told, input);
    }
    if !flags.reads() && server.stats().buffered_bytes > 0 {
        stalled_peer_is_dropped(server).await;
    }
    drop((read, write));
    ipc_fuzz::assert_settles(server).await;
}

/// The client reads nothing and the server's replies wait: "a connection
/// ... whose replies have waited a whole period with nothing read" is
/// closed, "checked once per period, so within two periods" (README,
/// `idle_timeout`). The client keeps its end open: the server must give
/// the connection back by itself.
async fn stalled_peer_is_dropped(server: &ServerHandle) {
    let bound = 2 * IDLE + Duration::from_millis(100);
    let dropped = tokio::time::timeout(bound, async {
        while server.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        dropped.is_ok(),
        "a client that read nothing for {bound:?} with replies waiting still holds its \
         connection: {:?}",
        server.stats()
    );
}

/// Whether `IPC_FUZZ_CHECK_EXPORTS` is set: then [`exports_were_told`] runs.
/// Off by default while `ipc-core` leaks the objects of messages it never
/// sends (see the README).
fn check_exports() -> bool {
    static CHECK: OnceLock<bool> = OnceLock::new();
    *CHECK.get_or_init(|| std::env::var_os("IPC_FUZZ_CHECK_EXPORTS").is_some())
}

/// Records the handle of an exported object the server tells the client
/// about: the body of a successful `open` reply or a `cells` stream item,
/// the only messages of `Target` that carry a bare `u32` from 2³¹ up.
fn told_of(frame: &[u8], told: &mut HashSet<u32>) {
    let Some((&kind, rest)) = frame.split_first() else {
        return;
    };
    let Some(payload) = rest.get(8..) else {
        return;
    };
    let handle = match (kind, payload) {
        (frames::RESPONSE, [0, h @ ..]) | (frames::STREAM_ITEM, h) if h.len() == 4 => h,
        _ => return,
    };
    let handle = u32::from_le_bytes([handle[0], handle[1], handle[2], handle[3]]);
    if handle >= frames::EXPORT_BASE {
        told.insert(handle);
    }
}

/// With the connection open and quiet: the server exports no object the
/// client cannot know of. Every exported object was told in a reply or a
/// stream item, and is not released, except at most one per open stream
/// (the item a producer encodes ahead of its credit).
fn exports_were_told(server: &ServerHandle, told: &HashSet<u32>, input: &[u8]) {
    let mut codec = wire::codec(64 * 1024);
    let mut buf = BytesMut::from(input);
    let mut released = HashSet::new();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Ok(Message::Release { handle }) = wire::parse(frame.freeze()) {
            released.insert(handle);
        }
    }
    let held = told.difference(&released).count();
    let stats = server.stats();
    assert!(
        stats.remote_objects <= held + stats.streams,
        "the server holds {} exported objects; the client was told of {} and released {} of \
         them, and {} streams are open: objects in messages never sent stay exported",
        stats.remote_objects,
        told.len(),
        told.len() - held,
        stats.streams,
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let server = server();
    ipc_fuzz::run(session(server, Flags(flags), input));
});
