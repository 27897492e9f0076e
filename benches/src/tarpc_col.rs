//! The tarpc column: the same two methods as [`crate::Bench`], served by
//! tarpc 0.38 over TCP with its bincode serde transport, in tarpc's usual
//! idioms (`BaseChannel::with_defaults(..).execute(..).for_each(spawn)` per
//! connection, no per-IP channel limit, `context::current()` per call).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tarpc::context::{self, Context};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest frame either end accepts (the 1 MiB echo plus headers fits).
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The deadline every call gets: generous, so it never fires in a benchmark.
const DEADLINE: Duration = Duration::from_secs(60);

#[allow(missing_docs, unreachable_pub)]
mod service {
    /// [`crate::Bench`] as a tarpc service.
    #[tarpc::service]
    pub trait TarpcBench {
        /// Adds two numbers.
        async fn add(a: u64, b: u64) -> u64;
        /// Returns its argument.
        async fn echo(data: Vec<u8>) -> Vec<u8>;
    }
}
pub use service::{TarpcBench, TarpcBenchClient};

/// The implementation of [`TarpcBench`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TarpcBenchImpl;

impl TarpcBench for TarpcBenchImpl {
    async fn add(self, _: Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(self, _: Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

fn framed(stream: TcpStream) -> tarpc::tokio_util::codec::Framed<TcpStream, LengthDelimitedCodec> {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_framed(stream)
}

/// Binds `addr` and serves every connection (TCP_NODELAY on) until the task
/// is aborted or its runtime dropped. Must be called inside a Tokio runtime.
pub async fn serve(addr: &str) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
            let channel = BaseChannel::with_defaults(transport)
                .execute(TarpcBenchImpl.serve())
                .for_each(|response| async move {
                    tokio::spawn(response);
                });
            tokio::spawn(channel);
        }
    });
    Ok((local, task))
}

/// Connects (TCP_NODELAY on) and spawns the client's dispatch task on the
/// current runtime.
pub async fn connect(addr: SocketAddr) -> io::Result<TarpcBenchClient> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
    Ok(TarpcBenchClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// `context::current()` with a generous deadline.
pub fn ctx() -> Context {
    let mut ctx = context::current();
    ctx.deadline = Instant::now() + DEADLINE;
    ctx
}
