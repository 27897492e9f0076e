//! [`LocalEtcd`]: a throwaway etcd process on free local ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::RegistryError;

/// What to tell someone who has no `etcd` binary.
const INSTALL_HINT: &str = "install etcd-server: apt-get install -y etcd-server";

/// How long etcd may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A single-member etcd cluster in its own process, listening on free
/// `127.0.0.1` ports with a data directory under the system's temp dir —
/// for tests and examples. The process is killed and the directory
/// removed when this is dropped.
///
/// The binary is `$ETCD_BIN` if set, else `etcd` on the `PATH` (Debian:
/// `apt-get install -y etcd-server`); without one, [`LocalEtcd::start`]
/// fails with a message that says how to install it.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl LocalEtcd {
    /// Starts etcd and returns once it serves clients (within 15 s).
    pub async fn start() -> Result<Self, RegistryError> {
        let dir = std::env::temp_dir().join(format!(
            "ipc-etcd-{}-{}",
            std::process::id(),
            crate::instance::random_id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| RegistryError::Etcd {
            detail: format!("cannot create {}: {e}", dir.display()),
        })?;
        let mut etcd = Self {
            child: None,
            dir,
            client_port: free_port()?,
            peer_port: free_port()?,
        };
        etcd.spawn().await?;
        Ok(etcd)
    }

    /// The client URL: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills the process (`SIGKILL`) and waits for it to end. Its data
    /// stays, for [`LocalEtcd::restart`].
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills the process if it runs, and starts it again on the same ports
    /// with the same data.
    pub async fn restart(&mut self) -> Result<(), RegistryError> {
        self.kill().await;
        self.spawn().await
    }

    /// Kills the process if it runs, deletes its data, and starts it again
    /// on the same ports: an etcd that lost everything.
    pub async fn restart_empty(&mut self) -> Result<(), RegistryError> {
        self.kill().await;
        let data = self.dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| RegistryError::Etcd {
                detail: format!("cannot remove {}: {e}", data.display()),
            })?;
        }
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), RegistryError> {
        let binary = std::env::var_os("ETCD_BIN").unwrap_or_else(|| "etcd".into());
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut child = Command::new(&binary)
            .arg("--name=ipc-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=ipc-test={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RegistryError::Etcd {
                detail: if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "no `{}` binary found: {INSTALL_HINT}",
                        binary.to_string_lossy()
                    )
                } else {
                    format!("cannot run `{}`: {e}", binary.to_string_lossy())
                },
            })?;
        let Some(stderr) = child.stderr.take() else {
            return Err(RegistryError::Etcd {
                detail: "etcd's stderr is not piped".into(),
            });
        };
        let mut lines = BufReader::new(stderr).lines();
        // etcd logs this line once it accepts client requests.
        let ready = async {
            let mut log = Vec::new();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if line.contains("ready to serve client requests") {
                            return Ok(());
                        }
                        log.push(line);
                    }
                    _ => return Err(log.join("\n")),
                }
            }
        };
        match tokio::time::timeout(START_TIMEOUT, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(log)) => {
                return Err(RegistryError::Etcd {
                    detail: format!("etcd exited before it was ready:\n{log}"),
                });
            }
            Err(_) => {
                return Err(RegistryError::Etcd {
                    detail: format!("etcd not ready within {START_TIMEOUT:?}"),
                });
            }
        }
        // Keep reading, so that etcd never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local port no one listens on now.
fn free_port() -> Result<u16, RegistryError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| RegistryError::Etcd {
            detail: format!("no free local port: {e}"),
        })
}
