//! A chat room over `ipc`: members join with a callback object the room
//! calls for every message, over the member's own connection (the member
//! opens no listening socket). Every member sees every message in the same
//! order: the room puts each message in every member's queue under one
//! lock, and delivers each queue in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ipc_core::{Remote, expose};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Why the room refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatError {
    /// Someone with this name is in the room.
    NameTaken(String),
    /// This name is not in the room.
    NotAMember(String),
}

/// A member of the room, as the room sees it: an object the member passes
/// when joining and the room calls back.
#[expose]
pub trait Member {
    /// A message posted by `from`.
    async fn deliver(&self, from: String, text: String);
}

/// The room.
#[expose]
pub trait ChatRoom {
    /// Joins as `name`; `member` receives every message posted from now on,
    /// the member's own included. Returns how many members there are.
    async fn join(&self, name: String, member: Remote<MemberProxy>) -> Result<u64, ChatError>;
    /// Posts `text` as `name` to every member.
    async fn post(&self, name: String, text: String) -> Result<(), ChatError>;
    /// Leaves the room.
    async fn leave(&self, name: String) -> Result<(), ChatError>;
}

/// A message on its way to one member.
type Message = (String, String);

/// The room's state: each member's queue of messages.
#[derive(Default, Clone)]
pub struct Room {
    members: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>,
}

impl Room {
    fn members(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Message>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ChatRoom for Room {
    async fn join(&self, name: String, member: Remote<MemberProxy>) -> Result<u64, ChatError> {
        let (queue, mut messages) = mpsc::unbounded_channel::<Message>();
        let count = {
            let mut members = self.members();
            if members.contains_key(&name) {
                return Err(ChatError::NameTaken(name));
            }
            members.insert(name.clone(), queue);
            members.len() as u64
        };
        // Delivers this member's messages one at a time, in order, until it
        // leaves or its connection is gone.
        let room = self.clone();
        let member = member.into_proxy();
        tokio::spawn(async move {
            while let Some((from, text)) = messages.recv().await {
                if let Err(e) = member.deliver(from, text).await {
                    tracing::info!(member = %name, error = %e, "member gone; removing it");
                    room.members().remove(&name);
                    break;
                }
            }
        });
        Ok(count)
    }

    async fn post(&self, name: String, text: String) -> Result<(), ChatError> {
        let members = self.members();
        if !members.contains_key(&name) {
            return Err(ChatError::NotAMember(name));
        }
        // Under the lock: every queue gets the messages in one order.
        for queue in members.values() {
            let _ = queue.send((name.clone(), text.clone()));
        }
        Ok(())
    }

    async fn leave(&self, name: String) -> Result<(), ChatError> {
        match self.members().remove(&name) {
            Some(_) => Ok(()),
            None => Err(ChatError::NotAMember(name)),
        }
    }
}

/// A member that hands what it receives to the program, as `from: text`.
pub struct Inbox(pub mpsc::UnboundedSender<String>);

impl Member for Inbox {
    async fn deliver(&self, from: String, text: String) {
        let _ = self.0.send(format!("{from}: {text}"));
    }
}
