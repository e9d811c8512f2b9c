//! `auth enable|disable`, `user add|delete|get|list|passwd|grant-role|revoke-role` and
//! `role add|delete|get|list|grant-permission|revoke-permission`, as etcdctl 3.4 runs
//! them: the same argument checks (exit 128) before anything is dialled, the same
//! password sources (`user:password`, `--new-user-password`, `--interactive=false`
//! reading stdin, or the prompt), the same ranges built from `--prefix` and
//! `--from-key`, server errors as `Error: <etcd message>` with exit code 1. (etcdctl
//! 3.4 has no `auth status`.)

use clap::{ArgAction, Args, Subcommand};
use skiff_client::proto::authpb::permission;
use skiff_client::{prefix_end, EtcdError};

use crate::cmd::err1;
use crate::exit::{fail, BAD_ARGS};
use crate::globals::Cli;
use crate::output::revoked_line;
use crate::prompt;

/// The auth verbs.
#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Enables authentication
    Enable(Plain),
    /// Disables authentication
    Disable(Plain),
}

/// The user verbs.
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Adds a new user
    Add(UserAddArgs),
    /// Deletes a user
    Delete(Plain),
    /// Gets detailed information of a user
    Get(UserGetArgs),
    /// Lists all users
    List(Plain),
    /// Changes password of user
    Passwd(PasswdArgs),
    /// Grants a role to a user
    GrantRole(Plain),
    /// Revokes a role from a user
    RevokeRole(Plain),
}

/// The role verbs.
#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Adds a new role
    Add(Plain),
    /// Deletes a role
    Delete(Plain),
    /// Gets detailed information of a role
    Get(Plain),
    /// Lists all roles
    List(Plain),
    /// Grants a key to a role
    GrantPermission(PermArgs),
    /// Revokes a key from a role
    RevokePermission(PermArgs),
}

/// Positional arguments only.
#[derive(Args, Debug)]
pub struct Plain {
    /// arguments
    pub args: Vec<String>,
}

/// `user add <user name or user:password> [options]`
#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// Read password from stdin instead of interactive terminal
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub interactive: bool,
    /// Supply password from the command line flag
    #[arg(long = "new-user-password", default_value = "")]
    pub new_user_password: String,
    /// Create a user without password (CN based auth only)
    #[arg(long = "no-password")]
    pub no_password: bool,
    /// <user name or user:password>
    pub args: Vec<String>,
}

/// `user get <user name> [options]`
#[derive(Args, Debug)]
pub struct UserGetArgs {
    /// Show permissions of roles granted to the user
    #[arg(long)]
    pub detail: bool,
    /// <user name>
    pub args: Vec<String>,
}

/// `user passwd <user name> [options]`
#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// If true, read password from stdin instead of interactive terminal
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub interactive: bool,
    /// <user name>
    pub args: Vec<String>,
}

/// `role grant-permission|revoke-permission` flags.
#[derive(Args, Debug)]
pub struct PermArgs {
    /// grant (revoke) a permission of keys that are greater than or equal to the given key using byte compare
    #[arg(long = "from-key")]
    pub from_key: bool,
    /// grant (revoke) a prefix permission
    #[arg(long)]
    pub prefix: bool,
    /// <role name> [<permission type>] <key> [endkey]
    pub args: Vec<String>,
}

fn bad(msg: &str) -> anyhow::Error {
    fail(BAD_ARGS, msg)
}

/// etcdctl's password prompt, twice, for a new password of `name`.
fn new_password_interactive(name: &str) -> anyhow::Result<String> {
    let first = prompt::ask(&format!("Password of {name}: "))
        .map_err(|e| bad(&format!("failed to ask password: {e}")))?;
    if first.is_empty() {
        return Err(bad("empty password"));
    }
    let second = prompt::ask(&format!("Type password of {name} again for confirmation: "))
        .map_err(|e| bad(&format!("failed to ask password: {e}")))?;
    if first != second {
        return Err(bad("given passwords are different"));
    }
    Ok(first)
}

/// Runs an auth verb.
pub async fn auth(cli: &Cli, c: &AuthCmd) -> anyhow::Result<()> {
    match c {
        AuthCmd::Enable(a) => {
            if !a.args.is_empty() {
                return Err(bad("auth enable command does not accept any arguments"));
            }
            let client = cli.client().await?;
            // As etcdctl: a missing `root` role is created and granted to `root`.
            loop {
                match client.auth_enable().await {
                    Ok(_) => break,
                    Err(skiff_client::Error::Etcd(EtcdError::RootRoleNotExist)) => {
                        client.role_add("root").await.map_err(err1)?;
                        client.user_grant_role("root", "root").await.map_err(err1)?;
                    }
                    Err(e) => return Err(err1(e)),
                }
            }
            cli.printer()?.text("Authentication Enabled");
            Ok(())
        }
        AuthCmd::Disable(a) => {
            if !a.args.is_empty() {
                return Err(bad("auth disable command does not accept any arguments"));
            }
            cli.client().await?.auth_disable().await.map_err(err1)?;
            cli.printer()?.text("Authentication Disabled");
            Ok(())
        }
    }
}

/// Runs a user verb.
pub async fn user(cli: &Cli, c: &UserCmd) -> anyhow::Result<()> {
    match c {
        UserCmd::Add(a) => {
            if a.args.len() != 1 {
                return Err(bad("user add command requires user name as its argument"));
            }
            let arg = &a.args[0];
            let (name, password) = if a.no_password {
                (arg.clone(), String::new())
            } else if !a.new_user_password.is_empty() {
                (arg.clone(), a.new_user_password.clone())
            } else if let Some((user, password)) = arg.split_once(':') {
                if user.is_empty() {
                    return Err(bad("empty user name is not allowed"));
                }
                (user.to_string(), password.to_string())
            } else if a.interactive {
                (arg.clone(), new_password_interactive(arg)?)
            } else {
                (arg.clone(), prompt::scan_word())
            };
            let resp = cli
                .client()
                .await?
                .user_add(name.as_str(), password, a.no_password)
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("User {name} created"),
                resp.header.as_ref(),
                &resp,
            )
        }
        UserCmd::Delete(a) => {
            if a.args.len() != 1 {
                return Err(bad(
                    "user delete command requires user name as its argument",
                ));
            }
            let name = &a.args[0];
            let resp = cli
                .client()
                .await?
                .user_delete(name.as_str())
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("User {name} deleted"),
                resp.header.as_ref(),
                &resp,
            )
        }
        UserCmd::Get(a) => {
            if a.args.len() != 1 {
                return Err(bad("user get command requires user name as its argument"));
            }
            let name = &a.args[0];
            let client = cli.client().await?;
            let resp = client.user_get(name.as_str()).await.map_err(err1)?;
            let mut printer = cli.printer()?;
            if !a.detail {
                return printer.user_get(name, &resp);
            }
            printer.text(format!("User: {name}"));
            for role in &resp.roles {
                printer.text("");
                let r = client.role_get(role.as_str()).await.map_err(err1)?;
                printer.role_get(role, &r)?;
            }
            Ok(())
        }
        UserCmd::List(a) => {
            if !a.args.is_empty() {
                return Err(bad("user list command requires no arguments"));
            }
            let resp = cli.client().await?.user_list().await.map_err(err1)?;
            cli.printer()?.user_list(&resp)
        }
        UserCmd::Passwd(a) => {
            if a.args.len() != 1 {
                return Err(bad(
                    "user passwd command requires user name as its argument",
                ));
            }
            let name = &a.args[0];
            let password = if a.interactive {
                new_password_interactive(name)?
            } else {
                prompt::scan_word()
            };
            let resp = cli
                .client()
                .await?
                .user_change_password(name.as_str(), password)
                .await
                .map_err(err1)?;
            cli.printer()?
                .auth_header_only("Password updated".into(), resp.header.as_ref(), &resp)
        }
        UserCmd::GrantRole(a) => {
            if a.args.len() != 2 {
                return Err(bad(
                    "user grant command requires user name and role name as its argument",
                ));
            }
            let (user, role) = (&a.args[0], &a.args[1]);
            let resp = cli
                .client()
                .await?
                .user_grant_role(user.as_str(), role.as_str())
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("Role {role} is granted to user {user}"),
                resp.header.as_ref(),
                &resp,
            )
        }
        UserCmd::RevokeRole(a) => {
            if a.args.len() != 2 {
                return Err(bad(
                    "user revoke-role requires user name and role name as its argument",
                ));
            }
            let (user, role) = (&a.args[0], &a.args[1]);
            let resp = cli
                .client()
                .await?
                .user_revoke_role(user.as_str(), role.as_str())
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("Role {role} is revoked from user {user}"),
                resp.header.as_ref(),
                &resp,
            )
        }
    }
}

/// The key and range end a permission's `key [endkey]` arguments and `--prefix` /
/// `--from-key` describe, as etcdctl builds them: an empty key is `\0` (and with
/// either flag the whole key space, `[\0, \0)`); `--prefix` is the prefix's range;
/// `--from-key` ends at `\0` (open ended).
fn perm_range(a: &PermArgs, args: &[String]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let key = &args[0];
    if key.is_empty() {
        if a.prefix && a.from_key {
            return Err(bad("--from-key and --prefix flags are mutually exclusive"));
        }
        let end = if a.prefix || a.from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = if args.len() == 1 {
        if a.prefix {
            if a.from_key {
                return Err(bad("--from-key and --prefix flags are mutually exclusive"));
            }
            prefix_end(key.as_bytes())
        } else if a.from_key {
            vec![0]
        } else {
            Vec::new()
        }
    } else if a.prefix {
        return Err(bad("unexpected endkey argument with --prefix flag"));
    } else if a.from_key {
        return Err(bad("unexpected endkey argument with --from-key flag"));
    } else {
        args[1].as_bytes().to_vec()
    };
    Ok((key.as_bytes().to_vec(), end))
}

/// etcd's permission type names, in any case.
fn perm_type(text: &str) -> anyhow::Result<permission::Type> {
    match text.to_uppercase().as_str() {
        "READ" => Ok(permission::Type::Read),
        "WRITE" => Ok(permission::Type::Write),
        "READWRITE" => Ok(permission::Type::Readwrite),
        _ => Err(bad(&format!("invalid permission type: {text}"))),
    }
}

/// Runs a role verb.
pub async fn role(cli: &Cli, c: &RoleCmd) -> anyhow::Result<()> {
    match c {
        RoleCmd::Add(a) => {
            if a.args.len() != 1 {
                return Err(bad("role add command requires role name as its argument"));
            }
            let role = &a.args[0];
            let resp = cli
                .client()
                .await?
                .role_add(role.as_str())
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("Role {role} created"),
                resp.header.as_ref(),
                &resp,
            )
        }
        RoleCmd::Delete(a) => {
            if a.args.len() != 1 {
                return Err(bad(
                    "role delete command requires role name as its argument",
                ));
            }
            let role = &a.args[0];
            let resp = cli
                .client()
                .await?
                .role_delete(role.as_str())
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("Role {role} deleted"),
                resp.header.as_ref(),
                &resp,
            )
        }
        RoleCmd::Get(a) => {
            if a.args.len() != 1 {
                return Err(bad("role get command requires role name as its argument"));
            }
            let role = &a.args[0];
            let resp = cli
                .client()
                .await?
                .role_get(role.as_str())
                .await
                .map_err(err1)?;
            cli.printer()?.role_get(role, &resp)
        }
        RoleCmd::List(a) => {
            if !a.args.is_empty() {
                return Err(bad("role list command requires no arguments"));
            }
            let resp = cli.client().await?.role_list().await.map_err(err1)?;
            cli.printer()?.role_list(&resp)
        }
        RoleCmd::GrantPermission(a) => {
            if a.args.len() < 3 {
                return Err(bad(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                ));
            }
            let t = perm_type(&a.args[1])?;
            let (key, end) = perm_range(a, &a.args[2..])?;
            let role = &a.args[0];
            let resp = cli
                .client()
                .await?
                .role_grant_permission(role.as_str(), t, key, end)
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                format!("Role {role} updated"),
                resp.header.as_ref(),
                &resp,
            )
        }
        RoleCmd::RevokePermission(a) => {
            if a.args.len() < 2 {
                return Err(bad(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                ));
            }
            let (key, end) = perm_range(a, &a.args[1..])?;
            let role = &a.args[0];
            let resp = cli
                .client()
                .await?
                .role_revoke_permission(role.as_str(), key, end.clone())
                .await
                .map_err(err1)?;
            cli.printer()?.auth_header_only(
                revoked_line(role, &a.args[1], &end),
                resp.header.as_ref(),
                &resp,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(prefix: bool, from_key: bool) -> PermArgs {
        PermArgs {
            prefix,
            from_key,
            args: Vec::new(),
        }
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranges_are_etcdctls() {
        let r = |p, f, a: &[&str]| perm_range(&args(p, f), &v(a)).map_err(|e| e.to_string());
        assert_eq!(r(false, false, &["k"]), Ok((b"k".to_vec(), vec![])));
        assert_eq!(r(true, false, &["p"]), Ok((b"p".to_vec(), b"q".to_vec())));
        assert_eq!(r(false, true, &["w"]), Ok((b"w".to_vec(), vec![0])));
        assert_eq!(
            r(false, false, &["a", "c"]),
            Ok((b"a".to_vec(), b"c".to_vec()))
        );
        assert_eq!(r(false, false, &[""]), Ok((vec![0], vec![])));
        assert_eq!(r(true, false, &[""]), Ok((vec![0], vec![0])));
        assert_eq!(r(false, true, &[""]), Ok((vec![0], vec![0])));
        assert_eq!(
            r(true, false, &["a", "c"]),
            Err("unexpected endkey argument with --prefix flag".into())
        );
        assert_eq!(
            r(false, true, &["a", "c"]),
            Err("unexpected endkey argument with --from-key flag".into())
        );
        assert_eq!(
            r(true, true, &["a"]),
            Err("--from-key and --prefix flags are mutually exclusive".into())
        );
        assert!(perm_type("readWrite").is_ok());
        assert_eq!(
            perm_type("bogus").map_err(|e| e.to_string()).err(),
            Some("invalid permission type: bogus".into())
        );
    }
}
