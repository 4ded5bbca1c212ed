//! `lectern serve` as a process of its own, for tests that send it signals or run several
//! of it at once; killed when dropped.

use serde_json::{Value, json};
use std::time::Duration;

pub async fn graphql_at(address: &str, token: Option<&str>, query: &str) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Whether the server at `address` reports the database as `status` within 30 s.
pub async fn database_is(address: &str, status: &str) -> bool {
    crate::helpers::eventually(Duration::from_secs(30), || async {
        graphql_at(address, None, "{ health { database } }").await["data"]["health"]["database"]
            == status
    })
    .await
}

/// A `lectern serve` process of its own, so a test can send it signals.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
    _logs: std::thread::JoinHandle<()>,
}

impl ServerProcess {
    pub fn start(data_dir: &std::path::Path, env: &[(&str, String)]) -> Self {
        use std::io::{BufRead as _, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
            .current_dir(data_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DATA_DIR", data_dir)
            .env("JWT_SECRET", crate::helpers::JWT_SECRET)
            .env("CORPUS_DIR", crate::helpers::CORPUS)
            .env("LOG_FORMAT", "json")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let address = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "the server exited"
            );
            if let Ok(entry) = serde_json::from_str::<Value>(&line)
                && let Some(address) = entry["fields"]["address"].as_str()
            {
                break address.to_owned();
            }
        };
        let logs = std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
        });
        Self {
            child,
            address,
            _logs: logs,
        }
    }

    pub async fn graphql(&self, token: Option<&str>, query: &str) -> Value {
        graphql_at(&self.address, token, query).await
    }

    /// Registers a reader and returns their access token.
    pub async fn register(&self, email: &str) -> String {
        let query = format!(
            "mutation {{ register(input: {{email: \"{email}\", password: \"correct horse battery\", name: \"R\"}}) {{ accessToken }} }}"
        );
        let registered = self.graphql(None, &query).await;
        registered["data"]["register"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("registered: {registered}"))
            .to_owned()
    }

    pub fn terminate(&self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
