//! List and watch throughput (placeholder until the benchmark lands).
fn main() {}
