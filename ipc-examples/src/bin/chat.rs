//! A chat room: members join with a callback object and receive every
//! message, in order, over their own connection.
//!
//! ```text
//! chat                              a room and two scripted members, alice and bob,
//!                                   in one process; prints what each received, exits 0
//! chat serve [--addr ADDR]          the room alone            (default localhost:9099)
//! chat join [--addr ADDR] NAME      a member: posts each line of standard input,
//!                                   prints `NAME got: FROM: TEXT` for each message
//!                                   received; leaves at the end of input
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use ipc_core::{Client, Remote, Server};
use ipc_examples::chat::{ChatRoomProxy, ChatRoomServer, Inbox, MemberServer, Room};
use ipc_examples::{Args, ArgsError};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

const USAGE: &str = "usage: chat | chat serve [--addr HOST:PORT|unix:PATH] | \
                     chat join [--addr HOST:PORT|unix:PATH] NAME";

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let parsed = Args::parse(args);
    match (command.as_deref(), parsed) {
        (None, _) => match scripted().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        (Some("serve"), Ok(args)) if args.rest.is_empty() => {
            let server = match args.server() {
                Ok(builder) => builder.expose(ChatRoomServer::new(Room::default())),
                Err(why) => return usage_error(&why),
            };
            ipc_examples::serve_until_signal("chat", server).await
        }
        (Some("join"), Ok(mut args)) if args.rest.len() == 1 => {
            let name = args.rest.remove(0);
            match join(&args, name).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        (Some("-h" | "--help"), _) | (_, Err(ArgsError::Help)) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        (_, Err(ArgsError::Invalid(why))) => usage_error(&why),
        (Some(other), _) => usage_error(&format!("unexpected `{other}` or arguments")),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("chat: {e}");
    ExitCode::FAILURE
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("chat: {why}\n{USAGE}");
    ExitCode::from(2)
}

/// Joins `room` as `name`: what the member receives arrives on the returned
/// receiver, as `from: text`.
async fn enter(
    room: &ChatRoomProxy,
    name: &str,
) -> Result<mpsc::UnboundedReceiver<String>, Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let member = Remote::new(MemberServer::new(Inbox(tx)));
    room.join(name.to_owned(), member)
        .await
        .map_err(|e| format!("{e}"))?;
    Ok(rx)
}

/// The room and two scripted members in one process.
async fn scripted() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(ChatRoomServer::new(Room::default()))
        .start()
        .await?;
    let script = [
        ("alice", "hi bob"),
        ("bob", "hi alice"),
        ("alice", "see you"),
    ];
    let mut members = Vec::new();
    for name in ["alice", "bob"] {
        // Each member on its own connection, as two programs would be.
        let client = Client::connect(server.local_addr()).await?;
        let room: ChatRoomProxy = client.get_exposed_object().await?;
        let inbox = enter(&room, name).await?;
        members.push((name, room, inbox));
    }
    for (from, text) in script {
        let (_, room, _) = members
            .iter()
            .find(|(name, ..)| *name == from)
            .ok_or("no such member")?;
        room.post(from.to_owned(), text.to_owned())
            .await
            .map_err(|e| format!("{e}"))?;
    }
    // Each member receives every message, in order. Printed member by
    // member, so the output is the same on every run.
    for (name, room, mut inbox) in members {
        for _ in script {
            let message = inbox.recv().await.ok_or("the room stopped delivering")?;
            println!("{name} got: {message}");
        }
        room.leave(name.to_owned())
            .await
            .map_err(|e| format!("{e}"))?;
    }
    server.stop().await;
    Ok(())
}

/// A member in its own process: posts each line of standard input, prints
/// what it receives, leaves at the end of input.
async fn join(args: &Args, name: String) -> Result<(), Box<dyn std::error::Error>> {
    let client = args.client()?.connect().await?;
    let room: ChatRoomProxy = client.get_exposed_object().await?;
    let mut inbox = enter(&room, &name).await?;
    println!("joined as {name}");
    let printer = {
        let name = name.clone();
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                println!("{name} got: {message}");
            }
        })
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        room.post(name.clone(), line)
            .await
            .map_err(|e| format!("{e}"))?;
    }
    if let Err(e) = room.leave(name.clone()).await {
        eprintln!("chat: leaving: {e}");
    }
    drop(room);
    drop(client);
    printer.abort();
    Ok(())
}
