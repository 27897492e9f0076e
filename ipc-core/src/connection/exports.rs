//! Objects this side exports to the peer on one connection: callbacks it
//! passed as arguments and objects it returned. Each lives until the peer
//! releases it (its last proxy is gone) or the connection closes.
//!
//! An exported object gets a handle from [`wire::EXPORT_BASE`] up, never
//! reused on the connection; the peer calls it with that handle.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Connection, Gauges, Target};
use crate::error::Error;
use crate::service::Service;
use crate::wire;

#[derive(Default)]
struct Table {
    objects: HashMap<u32, Target>,
    /// Exports made so far; the next handle is `EXPORT_BASE + issued`.
    issued: u32,
}

/// The table of one connection.
#[derive(Default)]
pub(crate) struct Exports {
    table: Mutex<Table>,
}

impl Exports {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Objects exported and not released.
    pub(crate) fn len(&self) -> usize {
        self.lock().objects.len()
    }

    fn get(&self, handle: u32) -> Option<Target> {
        self.lock().objects.get(&handle).cloned()
    }

    /// Drops every exported object (the connection has closed).
    pub(crate) fn clear(&self, gauges: &Gauges) {
        let objects = std::mem::take(&mut self.lock().objects);
        gauges.objects.fetch_sub(objects.len(), Ordering::Relaxed);
        // Dropped here, outside the lock: user code may run.
        drop(objects);
    }
}

impl Connection {
    /// Exports `service` to the peer: the handle it calls it by.
    pub(crate) fn export(&self, service: Arc<dyn Service>) -> Result<u32, Error> {
        if self.is_closed() {
            return Err(self.refusal());
        }
        let limit = self.config.max_objects;
        let mut table = self.exports.lock();
        if table.objects.len() >= limit {
            return Err(Error::Overloaded {
                detail: format!("{limit} objects already exported on this connection"),
            });
        }
        let handle = wire::EXPORT_BASE
            .checked_add(table.issued)
            .filter(|h| *h != u32::MAX)
            .ok_or_else(|| Error::Overloaded {
                detail: "every object handle of this connection has been used".into(),
            })?;
        table.issued += 1;
        let name = Arc::from(service.descriptor().trait_name);
        table.objects.insert(
            handle,
            Target {
                name,
                service,
                metrics: None,
            },
        );
        self.gauges.objects.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    /// The exported object with this handle, if it is still exported.
    pub(super) fn exported(&self, handle: u32) -> Option<Target> {
        self.exports.get(handle)
    }

    /// The peer released an exported object. Releasing one that is not
    /// exported (twice, or never) breaks the protocol.
    pub(super) fn on_release(&self, handle: u32) -> Result<(), Error> {
        let released = self.exports.lock().objects.remove(&handle);
        match released {
            Some(target) => {
                self.gauges.objects.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(handle, object = %target.name, "exported object released");
                // Dropped here, outside the lock: user code may run.
                drop(target);
                Ok(())
            }
            None => Err(Error::Protocol {
                detail: format!("a release of object {handle}, which is not exported"),
            }),
        }
    }
}

/// A proxy's hold on an object the peer exported: when the last proxy
/// holding it is dropped, the peer is told to release the object.
pub(crate) struct Import {
    conn: Arc<Connection>,
    handle: u32,
}

impl Import {
    /// A hold on object `handle` of the peer; it keeps the connection open.
    pub(crate) fn new(conn: Arc<Connection>, handle: u32) -> Self {
        conn.hold();
        Self { conn, handle }
    }

    /// The connection the object lives on.
    pub(crate) fn conn(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// The object's handle on that connection.
    pub(crate) fn handle(&self) -> u32 {
        self.handle
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        if !self.conn.is_closed() {
            let _ = self
                .conn
                .outbox
                .push_now(wire::FrameBuf::release(self.handle));
        }
        self.conn.unhold();
    }
}
