//! `skiff-failpoints`: the `skiff` member binary with failpoints compiled in, built only
//! with the server's `failpoints` feature. Same flags and exit codes as `skiff`;
//! `SKIFF_FAILPOINTS` arms the points (see the skiff-failpoints crate docs).

// The member's own `main`, included as a module (rather than naming src/main.rs as a
// second target's root, which makes cargo warn on every build of the workspace).
#[path = "../main.rs"]
mod member;

fn main() -> std::process::ExitCode {
    member::main()
}
