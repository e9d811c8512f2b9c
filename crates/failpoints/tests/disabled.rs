//! With the feature off, `init` refuses a set `SKIFF_FAILPOINTS`: the binary could not
//! inject anything, and a test relying on it must not pass by accident.
#![cfg(not(feature = "enabled"))]

#[test]
fn init_refuses_a_spec_it_cannot_honour() {
    std::env::remove_var(skiff_failpoints::ENV_VAR);
    assert_eq!(skiff_failpoints::init(), Ok(()));
    std::env::set_var(skiff_failpoints::ENV_VAR, "");
    assert_eq!(skiff_failpoints::init(), Ok(()));
    std::env::set_var(skiff_failpoints::ENV_VAR, "backend-commit=panic");
    let err = skiff_failpoints::init().unwrap_err();
    assert!(err.contains("built without failpoints"), "{err}");
}
