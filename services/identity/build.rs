//! Compiles this crate again when one of its migrations changes: `sqlx::migrate!` embeds the
//! files (and their checksums), and on stable Rust cargo does not otherwise know it reads them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
