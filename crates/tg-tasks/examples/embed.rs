//! Embeds lines of stdin with MiniLM and prints one JSON array per line.
//! `cargo run --release -p tg-tasks --example embed -- target/models < lines.txt`
use std::io::BufRead;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/models".into());
    let models = tg_tasks::Models::new(root);
    let m = models.minilm()?;
    let lines: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    for batch in lines.chunks(32) {
        for v in m.embed(batch)? {
            println!("{}", serde_json::to_string(&v)?);
        }
    }
    Ok(())
}
