//! With the feature on: `SKIFF_FAILPOINTS` arms the points the macros mark. One test
//! per file, because the spec is read once per process.
#![cfg(feature = "enabled")]

use skiff_failpoints::fail_point;

fn with_handler() -> Result<u32, String> {
    fail_point!("apply-entries", |msg| Err(format!("injected: {msg}")));
    Ok(1)
}

fn without_handler() -> u32 {
    fail_point!("backend-commit");
    2
}

fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("the point panics");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn env_spec_drives_the_macros() {
    std::env::set_var(
        skiff_failpoints::ENV_VAR,
        "apply-entries=2*error(disk gone); backend-commit=1*panic(boom)",
    );
    assert_eq!(skiff_failpoints::init(), Ok(()));

    // `error` at a point without a handler panics, saying so (and uses a hit).
    let msg = panic_message(|| {
        fail_point!("apply-entries");
    });
    assert!(msg.contains("apply-entries"), "{msg}");
    assert!(msg.contains("no error handler"), "{msg}");
    // The handler turns the message into the function's return value...
    assert_eq!(with_handler(), Err("injected: disk gone".to_string()));
    // ...for the first 2 hits only.
    assert_eq!(with_handler(), Ok(1));

    assert_eq!(
        panic_message(|| {
            without_handler();
        }),
        "boom"
    );
    assert_eq!(without_handler(), 2);
}
