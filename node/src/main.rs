//! `odradek`: the broker binary. The Kafka-protocol node arrives with the
//! next milestone; for now this reports what the engine build offers.

fn main() {
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "odradek {}: storage engine ready ({} shards available); the Kafka network node is not built yet.",
        env!("CARGO_PKG_VERSION"),
        shards
    );
    println!("Try the engine benchmark: cargo run --release -p odradek-bench --bin odradek-engine-bench -- --quick");
    let _ = odradek_engine::batch::HEADER_LEN;
}
