//! `unibus-liar`: the lying control plane of [`unibus_testkit::liar`] as a process, for the
//! binding tests.
//!
//! ```text
//! unibus-liar --cluster nats://127.0.0.1:4222 [--rollback ROOM:EPOCH] [--swap-owner ROOM]
//! ```
//!
//! Reads the user's identity secret (the 65 exported bytes, in hex) as the first line of stdin,
//! records from the real cluster, starts its own nats-server and prints one JSON line on stdout:
//! `{"nats_url": "nats://127.0.0.1:<port>", "impostor": "<hex>"}`. It runs until stdin is
//! closed (so it never outlives the test that started it), then stops its nats-server.

use std::io::BufRead;
use std::sync::Arc;

use unibus::{Identity, RoomId};
use unibus_testkit::liar::{Liar, LiarOptions};

fn usage(problem: &str) -> ! {
    eprintln!(
        "unibus-liar: {problem}\nusage: unibus-liar --cluster URL [--rollback ROOM:EPOCH] [--swap-owner ROOM]  (identity secret hex on stdin)"
    );
    std::process::exit(2)
}

fn room(text: &str) -> RoomId {
    RoomId::new(text).unwrap_or_else(|e| usage(&format!("bad room id {text:?}: {e}")))
}

fn main() {
    let mut options = LiarOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--cluster" => options.real_cluster.push(value),
            "--rollback" => {
                let (id, epoch) = value
                    .rsplit_once(':')
                    .unwrap_or_else(|| usage("--rollback takes ROOM:EPOCH"));
                let epoch = epoch
                    .parse()
                    .unwrap_or_else(|_| usage("--rollback takes ROOM:EPOCH"));
                options.rollback = Some((room(id), epoch));
            }
            "--swap-owner" => options.swap_owner = Some(room(&value)),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if options.real_cluster.is_empty() {
        usage("--cluster is required");
    }
    let mut stdin = std::io::stdin().lock();
    let mut secret = String::new();
    if stdin.read_line(&mut secret).is_err() {
        usage("no identity secret on stdin");
    }
    let identity = hex::decode(secret.trim())
        .ok()
        .and_then(|bytes| Identity::from_secret_bytes(&bytes).ok())
        .unwrap_or_else(|| usage("the first line of stdin is not an identity secret in hex"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("no runtime: {e}")));
    let liar = match runtime.block_on(Liar::start(Arc::new(identity), options)) {
        Ok(liar) => liar,
        Err(e) => {
            eprintln!("unibus-liar: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "{}",
        serde_json::json!({"nats_url": liar.nats_url, "impostor": liar.impostor.to_hex()})
    );
    // Until the test closes stdin (or exits).
    let mut rest = Vec::new();
    while stdin.read_until(b'\n', &mut rest).is_ok_and(|n| n > 0) {
        rest.clear();
    }
    drop(liar);
    drop(runtime);
}
