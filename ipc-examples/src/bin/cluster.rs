//! Three replicas of a service behind one balanced proxy: calls spread over
//! them, then move when one replica stops.
//!
//! ```text
//! cluster [--calls N] [--etcd URL]
//! cluster replica --id ID (--name-server ADDR | --etcd URL [--ttl SECS])
//! ```
//!
//! The first form starts three replicas (`r1`, `r2`, `r3`) of the
//! [`Work`](ipc_examples::cluster::Work) service in this process, registers
//! them, and makes `N` calls (default 3000) through one proxy from
//! `locate_all`, printing how many each replica served; halfway through it
//! stops `r2` gracefully and the calls move to the others. It ends with
//! `calls ok=N failed=M` and exits 0. The registry is an embedded name
//! server, or etcd at `--etcd URL` (built with `--features etcd`).
//!
//! The second form is one replica on its own (for trying `kill -9`): it
//! prints `replica ID listening on ADDR`, registers, prints `registered`,
//! and serves until Ctrl-C or SIGTERM (deregistering first).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use ipc_core::{Server, ServerHandle};
use ipc_examples::cluster::{Replica, WorkProxy, WorkServer};
use ipc_registry::{Instance, Locate, NameServerRegistry, Registry, ReplicaState};

const USAGE: &str = "usage: cluster [--calls N] [--etcd URL]\n       \
     cluster replica --id ID (--name-server ADDR | --etcd URL [--ttl SECS])";

/// The service's name in the registry.
const SERVICE: &str = "cluster-work";

#[derive(Default)]
struct Options {
    replica: bool,
    calls: Option<usize>,
    etcd: Option<String>,
    name_server: Option<String>,
    id: Option<String>,
    ttl: Option<u64>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("replica") {
        args.next();
        o.replica = true;
    }
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--calls" => {
                o.calls = Some(
                    value("a number")?
                        .parse()
                        .map_err(|_| "--calls needs a number")?,
                );
            }
            "--etcd" => o.etcd = Some(value("a URL")?),
            "--name-server" => o.name_server = Some(value("an address")?),
            "--id" => o.id = Some(value("an id")?),
            "--ttl" => {
                o.ttl = Some(
                    value("seconds")?
                        .parse()
                        .map_err(|_| "--ttl needs seconds")?,
                )
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let options = match parse() {
        Ok(o) => o,
        Err(why) if why.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("cluster: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if options.replica {
        replica(options).await
    } else {
        demo(options).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error>;

/// The registry the options name; with neither `--etcd` nor
/// `--name-server`, a name server started here (its handle returned).
async fn registry(options: &Options) -> Result<(Box<dyn Registry>, Option<ServerHandle>), Failure> {
    if let Some(url) = &options.etcd {
        return etcd(url, options.ttl).await.map(|r| (r, None));
    }
    if let Some(addr) = &options.name_server {
        let addr: ipc_core::Address = addr.parse()?;
        return Ok((Box::new(NameServerRegistry::new(addr)), None));
    }
    let names = Server::builder()
        .addr("127.0.0.1:0")
        .idle_timeout(None)
        .name_server()
        .start()
        .await?;
    let registry = NameServerRegistry::new(names.local_addr());
    Ok((Box::new(registry), Some(names)))
}

#[cfg(feature = "etcd")]
async fn etcd(url: &str, ttl: Option<u64>) -> Result<Box<dyn Registry>, Failure> {
    let registry = ipc_registry::EtcdRegistry::builder([url])
        .ttl(Duration::from_secs(ttl.unwrap_or(2)))
        .connect()
        .await?;
    Ok(Box::new(registry))
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_url: &str, _ttl: Option<u64>) -> Result<Box<dyn Registry>, Failure> {
    Err(
        "built without etcd: cargo run -p ipc-examples --features etcd --bin cluster -- --etcd URL"
            .into(),
    )
}

/// A replica server with id `id`, registered, deregistered when it stops.
async fn start_replica(
    registry: &dyn Registry,
    service: &str,
    id: &str,
) -> Result<ServerHandle, Failure> {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(WorkServer::new(Replica(id.to_owned())))
        .start()
        .await?;
    let instance = Instance::new::<WorkProxy>(service, server.local_addr()).with_id(id);
    registry
        .register(instance)
        .await?
        .deregister_on_stop(&server);
    Ok(server)
}

async fn replica(options: Options) -> Result<(), Failure> {
    let Some(id) = options.id.clone() else {
        return Err("replica needs --id ID".into());
    };
    if options.etcd.is_none() && options.name_server.is_none() {
        return Err("replica needs --name-server ADDR or --etcd URL".into());
    }
    let (registry, _) = registry(&options).await?;
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(WorkServer::new(Replica(id.clone())))
        .start()
        .await?;
    println!("replica {id} listening on {}", server.local_addr());
    let instance = Instance::new::<WorkProxy>(SERVICE, server.local_addr()).with_id(&id);
    registry
        .register(instance)
        .await?
        .deregister_on_stop(&server);
    println!("registered");
    ipc_core::shutdown_signal()?.await;
    server.stop().await;
    println!("replica {id} stopped");
    Ok(())
}

async fn demo(options: Options) -> Result<(), Failure> {
    let calls = options.calls.unwrap_or(3000);
    let (registry, names) = registry(&options).await?;
    // One service name per run: a shared etcd may hold an earlier run's.
    let service = format!("{SERVICE}-{}", std::process::id());
    let mut servers = BTreeMap::new();
    for id in ["r1", "r2", "r3"] {
        servers.insert(id, start_replica(registry.as_ref(), &service, id).await?);
    }
    let set = Locate::new(service.clone())
        .replicas::<WorkProxy>(registry.as_ref())
        .await?;
    let ready =
        set.wait_until(|s| s.iter().filter(|r| r.state == ReplicaState::Ready).count() == 3);
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| "the three replicas were not ready within 10 s")?;
    println!("3 replicas of `{service}` ready; {calls} calls");

    let work = set.proxy();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut stopping = None;
    for n in 1..=calls {
        match work.whoami().await {
            Ok(id) => {
                ok += 1;
                *counts.entry(id).or_default() += 1;
            }
            Err(e) => {
                failed += 1;
                eprintln!("call {n} failed: {e}");
            }
        }
        if n == calls / 2 {
            println!("after {n} calls: {}", show(&counts));
            counts.clear();
            println!("stopping r2");
            if let Some(r2) = servers.remove("r2") {
                // Stopped in the background: the calls go on meanwhile.
                stopping = Some(tokio::spawn(r2.stop()));
            }
        }
    }
    println!("after the rest: {}", show(&counts));
    drop(work);
    drop(set);
    if let Some(stop) = stopping {
        stop.await?;
    }
    for (_, server) in servers {
        server.stop().await;
    }
    if let Some(names) = names {
        names.stop().await;
    }
    println!("calls ok={ok} failed={failed}");
    Ok(())
}

fn show(counts: &BTreeMap<String, usize>) -> String {
    ["r1", "r2", "r3"]
        .iter()
        .map(|id| format!("{id}={}", counts.get(*id).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ")
}
