//! `datastore`: serves a datastore, and is its command line.
//!
//! ```text
//! datastore serve [--addr ADDR] [--dir PATH]     the server (default localhost:9100)
//! datastore set AUTHOR NAME VALUE [--persist] [--json]
//! datastore get AUTHOR NAME
//! datastore watch AUTHOR [NAME]                   prints changes until Ctrl-C
//! ```
//!
//! `datastore --help` lists every command. `serve` prints `data in PATH`,
//! then `listening on ADDR` once it accepts connections; it stops
//! gracefully on Ctrl-C or SIGTERM (calls in flight finish, queued writes
//! are committed). Exit codes: 0 success, 1 failure (or a value that is not
//! set), 2 bad usage.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;

use std::fmt::Display;
use std::process::ExitCode;

use futures::StreamExt;
use ipc_core::CallError;
use ipc_datastore::{
    DataStoreProxy, DataStoreServer, Limits, Store, StoreError, Value, WatchEvent,
};
use ipc_examples::ArgsError;

use crate::args::{Cli, Command, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let cli = match Cli::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Invalid(why)) => {
            eprintln!("datastore: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve { dir } => serve(&cli.args, dir).await,
        command => match client(&cli.args, command).await {
            Ok(code) => code,
            Err(why) => fail(why),
        },
    }
}

fn fail(why: impl Display) -> ExitCode {
    eprintln!("datastore: {why}");
    ExitCode::FAILURE
}

async fn serve(args: &ipc_examples::Args, dir: Option<std::path::PathBuf>) -> ExitCode {
    let Some(dir) = dir.or_else(args::default_dir) else {
        return fail("no data directory: give --dir PATH (neither XDG_DATA_HOME nor HOME is set)");
    };
    let builder = match args.server() {
        Ok(builder) => builder,
        Err(why) => {
            eprintln!("datastore: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Store::open(dir, Limits::default())).await
    };
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return fail(e),
        Err(e) => return fail(format!("opening the store: {e}")),
    };
    println!("data in {}", store.path().display());
    let code = ipc_examples::serve_until_signal(
        "datastore",
        builder.expose(DataStoreServer::new(store.clone())),
    )
    .await;
    store.close().await;
    code
}

/// What a call's error says, the store's own or the connection's.
fn describe(e: CallError<StoreError>) -> String {
    match e {
        CallError::App(e) => e.to_string(),
        CallError::Rpc(e) => e.to_string(),
        other => other.to_string(),
    }
}

async fn client(args: &ipc_examples::Args, command: Command) -> Result<ExitCode, String> {
    let client = args.client()?.connect().await.map_err(|e| e.to_string())?;
    let store: DataStoreProxy = client
        .get_exposed_object()
        .await
        .map_err(|e| e.to_string())?;
    let not_set = |author: &str, name: &str| {
        eprintln!("datastore: {author} {name} is not set");
        Ok(ExitCode::FAILURE)
    };
    match command {
        Command::Serve { .. } => Err("`serve` is not a client command".into()),
        Command::Set {
            author,
            name,
            value,
            persist,
            json,
        } => {
            let value = Value::from_cli(&value, json)?;
            let version = store
                .set(author, name, value, persist)
                .await
                .map_err(describe)?;
            println!("version {version}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { author, name } => {
            match store
                .get(author.clone(), name.clone())
                .await
                .map_err(|e| e.to_string())?
            {
                Some(entry) => {
                    println!("{}", entry.value.to_cli());
                    Ok(ExitCode::SUCCESS)
                }
                None => not_set(&author, &name),
            }
        }
        Command::Delete { author, name } => {
            match store
                .delete(author.clone(), name.clone())
                .await
                .map_err(describe)?
            {
                Some(_) => {
                    println!("deleted {author} {name}");
                    Ok(ExitCode::SUCCESS)
                }
                None => not_set(&author, &name),
            }
        }
        Command::List { author } => {
            let list = store.list(author).await.map_err(|e| e.to_string())?;
            for (author, names) in list {
                println!("{author}");
                for name in names {
                    println!("  {name}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { author, name } => watch(&store, author, name).await,
        Command::Save { author } => {
            let n = store.save(author).await.map_err(describe)?;
            println!("saved {n} values");
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { author } => {
            let n = store.restore(author).await.map_err(describe)?;
            println!("restored {n} values");
            Ok(ExitCode::SUCCESS)
        }
        Command::DeleteSaved { author } => {
            let n = store.delete_saved(author).await.map_err(describe)?;
            println!("deleted {n} saved values");
            Ok(ExitCode::SUCCESS)
        }
        Command::Persist { author, name, on } => {
            let found = if on {
                store.add_persistence(author.clone(), name.clone()).await
            } else {
                store.remove_persistence(author.clone(), name.clone()).await
            };
            if !found.map_err(describe)? {
                return not_set(&author, &name);
            }
            let how = if on { "on disk" } else { "in memory only" };
            println!("{author} {name} is kept {how}");
            Ok(ExitCode::SUCCESS)
        }
        Command::ClearAll => {
            let n = store.clear_all().await.map_err(describe)?;
            println!("deleted {n} values");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints each change until Ctrl-C (exit 0) or the server goes away
/// (exit 1).
async fn watch(
    store: &DataStoreProxy,
    author: String,
    name: Option<String>,
) -> Result<ExitCode, String> {
    let signal = ipc_core::shutdown_signal().map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    let what = match &name {
        Some(name) => format!("{author} {name}"),
        None => author.clone(),
    };
    let mut changes = store.watch(author, name).await.map_err(describe)?;
    // After this line every change is delivered: scripts may wait for it.
    println!("watching {what}");
    tokio::pin!(signal);
    loop {
        let change = tokio::select! {
            _ = &mut signal => return Ok(ExitCode::SUCCESS),
            change = changes.next() => change,
        };
        match change {
            Some(Ok(WatchEvent::Set {
                author,
                name,
                value,
                version,
                ..
            })) => println!("{author} {name} = {} (version {version})", value.to_cli()),
            Some(Ok(WatchEvent::Deleted {
                author,
                name,
                version,
            })) => println!("{author} {name} deleted (version {version})"),
            Some(Ok(WatchEvent::Lagged { from_version })) => {
                println!("lagged: changes from version {from_version} on were missed; re-read")
            }
            Some(Err(e)) => return Err(format!("the watch ended: {e}")),
            None => return Err("the watch ended".into()),
        }
    }
}
