//! Throw-away databases on the local PostgreSQL and MariaDB servers, created with the
//! servers' own command-line clients (`psql`, `mysql`) so the harness needs no database
//! driver of its own, and dropped when the value is dropped.
//!
//! The servers are expected at postgres@127.0.0.1:5432 (trust authentication) and
//! root@127.0.0.1:3306 (empty password), as `scripts/test` sets them up. A server that does
//! not answer fails the test that asked for it: it is never skipped.

use crate::tool::run_tool;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

/// A freshly created, uniquely named database; dropped on drop.
#[derive(Debug)]
pub struct ScratchDb {
    engine: Engine,
    pub name: String,
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rtc_test_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

fn sql(engine: Engine, statement: &str) -> Result<(), String> {
    let out = match engine {
        Engine::Postgres => run_tool(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                "5432",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-c",
                statement,
            ],
            CLIENT_TIMEOUT,
        ),
        Engine::Mysql => run_tool(
            "mysql",
            &[
                "-h",
                "127.0.0.1",
                "-P",
                "3306",
                "-u",
                "root",
                "-e",
                statement,
            ],
            CLIENT_TIMEOUT,
        ),
    };
    if out.success() {
        Ok(())
    } else {
        Err(out.to_string())
    }
}

impl ScratchDb {
    /// Creates the database; panics (with the client's output) if the server is down.
    pub fn create(engine: Engine) -> ScratchDb {
        let name = unique_name();
        if let Err(e) = sql(engine, &format!("CREATE DATABASE {name}")) {
            panic!("{engine:?} must be running on 127.0.0.1 for this test (scripts/test starts it):\n{e}");
        }
        ScratchDb { engine, name }
    }

    /// The URL turnd and rtc-store connect with.
    pub fn url(&self) -> String {
        match self.engine {
            Engine::Postgres => format!("postgres://postgres@127.0.0.1:5432/{}", self.name),
            Engine::Mysql => format!("mysql://root@127.0.0.1:3306/{}", self.name),
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let statement = match self.engine {
            // FORCE: a daemon killed a moment ago may still hold a connection.
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Engine::Mysql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Err(e) = sql(self.engine, &statement) {
            eprintln!("could not drop scratch database {}: {e}", self.name);
        }
    }
}
