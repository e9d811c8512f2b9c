//! `skiffctl`: etcdctl 3.4's command line (verbs, flags, `ETCDCTL_*` variables, output
//! formats and exit codes) on top of `skiff-client`, so scripts written for etcdctl run
//! unchanged and print the same bytes.

mod cmd;
mod exit;
mod globals;
mod output;
mod prompt;

use clap::Parser;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match globals::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => match cmd::mirror::is_make_mirror(&args)
            .then(|| cmd::mirror::flag_failure(&e))
            .flatten()
        {
            Some(code) => std::process::exit(code),
            None => e.exit(),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    let result = runtime.block_on(cmd::run(cli));
    if let Err(e) = result {
        let (code, msg) = match e.downcast_ref::<exit::Exit>() {
            Some(x) => (x.code, x.msg.clone()),
            None => (exit::ERROR, format!("{e:#}")),
        };
        eprintln!("Error: {msg}");
        std::process::exit(code);
    }
}
