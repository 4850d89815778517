//! XEP-0133 service administration over XEP-0050 ad-hoc commands, for the admins of a
//! host (`Config.admins` everywhere, `VHost.admins` on their host): add a user, delete
//! users, change a user's password, the number and the list of online users. Each
//! command is a XEP-0004 form to fill in (section 4 of XEP-0133 lists the fields), then
//! a completed answer; anyone else gets `forbidden`. The commands are listed on the
//! disco#items node `http://jabber.org/protocol/commands` (XEP-0050 section 2.2).
//!
//! Sessions are stateless: the form carries everything, so a `sessionid` is handed out
//! and echoed but nothing waits on the server between the two steps.

// A `StanzaError` is what goes on the wire when a request fails, built once per
// failed request; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]
use super::*;
use std::collections::VecDeque;

pub(crate) const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
const NS_ADMIN: &str = "http://jabber.org/protocol/admin";

const ADD_USER: &str = "http://jabber.org/protocol/admin#add-user";
const DELETE_USER: &str = "http://jabber.org/protocol/admin#delete-user";
const CHANGE_PASSWORD: &str = "http://jabber.org/protocol/admin#change-user-password";
const ONLINE_NUM: &str = "http://jabber.org/protocol/admin#get-online-users-num";
const ONLINE_LIST: &str = "http://jabber.org/protocol/admin#get-online-users-list";

/// (node, name) of every command, in the order listed.
const COMMANDS: &[(&str, &str)] = &[
    (ADD_USER, "Add User"),
    (DELETE_USER, "Delete User"),
    (CHANGE_PASSWORD, "Change User Password"),
    (ONLINE_NUM, "Get Number of Online Users"),
    (ONLINE_LIST, "Get List of Online Users"),
];

pub(crate) const MODULE: Module = Module {
    name: "adhoc",
    server_features: &[NS_COMMANDS],
    account_features: &[],
    iq: &[IqRoute {
        ns: NS_COMMANDS,
        name: "command",
        target: Target::Server,
        handler: command_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Whether `who` administers `host`.
fn admin_of(s: &Server, who: &Jid, host: &str) -> bool {
    let bare = who.bare();
    s.config().admins.contains(&bare) || s.vhost(host).is_some_and(|v| v.admins.contains(&bare))
}

/// XEP-0050 section 2.2: the commands `who` may run on `host`.
pub(crate) fn command_items(s: &Server, who: &Jid, host: &str) -> Element {
    let mut q = Element::new("query", disco::NS_DISCO_ITEMS).attr("node", NS_COMMANDS);
    if admin_of(s, who, host) {
        for (node, name) in COMMANDS {
            q.push(
                Element::new("item", disco::NS_DISCO_ITEMS)
                    .attr("jid", host)
                    .attr("node", node)
                    .attr("name", name),
            );
        }
    }
    q
}

/// XEP-0050 sections 2.2 and 2.3: disco#info of the command list and of one command.
pub(crate) fn node_info(node: &str) -> Option<Element> {
    let info = |category: &str, ty: &str, name: &str| {
        Element::new("query", disco::NS_DISCO_INFO)
            .attr("node", node)
            .child(
                Element::new("identity", disco::NS_DISCO_INFO)
                    .attr("category", category)
                    .attr("type", ty)
                    .attr("name", name),
            )
    };
    if node == NS_COMMANDS {
        return Some(info("automation", "command-list", "Commands"));
    }
    let (_, name) = COMMANDS.iter().find(|(n, _)| *n == node)?;
    Some(
        info("automation", "command-node", name)
            .child(Element::new("feature", disco::NS_DISCO_INFO).attr("var", NS_COMMANDS))
            .child(Element::new("feature", disco::NS_DISCO_INFO).attr("var", form::NS_DATA)),
    )
}

/// The `<command/>` answer (XEP-0050 section 3.4).
fn response(node: &str, sessionid: &str, status: &str) -> Element {
    Element::new("command", NS_COMMANDS)
        .attr("node", node)
        .attr("sessionid", sessionid)
        .attr("status", status)
}

fn completed(node: &str, sessionid: &str, note: &str, result: Option<Element>) -> Element {
    let mut c = response(node, sessionid, "completed");
    if !note.is_empty() {
        c.push(
            Element::new("note", NS_COMMANDS)
                .attr("type", "info")
                .text_node(note),
        );
    }
    if let Some(x) = result {
        c.push(x);
    }
    c
}

/// The first-stage form of a command (XEP-0133 section 4).
fn first_form(node: &str) -> Element {
    let title = COMMANDS
        .iter()
        .find(|(n, _)| *n == node)
        .map_or("", |(_, t)| t);
    let mut x = form::new_form("form", NS_ADMIN, Some(title));
    match node {
        ADD_USER => {
            x.push(form::required(form::field(
                "accountjid",
                "jid-single",
                Some("The Jabber ID for the account to be added"),
                &[],
            )));
            x.push(form::required(form::field(
                "password",
                "text-private",
                Some("The password for this account"),
                &[],
            )));
            x.push(form::required(form::field(
                "password-verify",
                "text-private",
                Some("Retype password"),
                &[],
            )));
        }
        DELETE_USER => {
            x.push(form::required(form::field(
                "accountjids",
                "jid-multi",
                Some("The Jabber ID(s) to delete"),
                &[],
            )));
        }
        CHANGE_PASSWORD => {
            x.push(form::required(form::field(
                "accountjid",
                "jid-single",
                Some("The Jabber ID for this account"),
                &[],
            )));
            x.push(form::required(form::field(
                "password",
                "text-private",
                Some("The password for this account"),
                &[],
            )));
        }
        _ => {
            x.push(form::with_options(
                form::field(
                    "max_items",
                    "list-single",
                    Some("Maximum number of items to show"),
                    &["25"],
                ),
                &["25", "50", "75", "100", "150", "200", "none"],
            ));
        }
    }
    x
}

fn command_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if !req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let host = req.to.domain().to_string();
    let requester = req.from.clone();
    if !admin_of(s, &requester, &host) {
        return IqReply::Error(StanzaError::new("forbidden"));
    }
    let cmd = req.payload();
    let Some(&(node, _)) = cmd
        .get_attr("node")
        .and_then(|n| COMMANDS.iter().find(|(c, _)| *c == n))
    else {
        return IqReply::Error(StanzaError::new("item-not-found"));
    };
    let sessionid = match cmd.get_attr("sessionid") {
        Some(id) => id.to_string(),
        None => s.random_id(),
    };
    match cmd.get_attr("action").unwrap_or("execute") {
        // Section 3.4.5.
        "cancel" => return IqReply::Result(Some(response(node, &sessionid, "canceled"))),
        "execute" | "complete" | "next" => {}
        _ => {
            return IqReply::Error(
                StanzaError::new("bad-request")
                    .with_app(Element::new("malformed-action", NS_COMMANDS)),
            )
        }
    }
    let submitted = form::find(cmd)
        .filter(|x| x.get_attr("type") == Some("submit"))
        .map(form::Submitted::parse);
    if node == ONLINE_NUM {
        // XEP-0133 section 4.15: one stage.
        let n = online_users(s, &host).len();
        let mut x = form::new_form("result", NS_ADMIN, None);
        x.push(form::field(
            "onlineusersnum",
            "text-single",
            Some("The number of online users"),
            &[&n.to_string()],
        ));
        return IqReply::Result(Some(completed(node, &sessionid, "", Some(x))));
    }
    let Some(f) = submitted else {
        let mut c = response(node, &sessionid, "executing");
        c.push(
            Element::new("actions", NS_COMMANDS)
                .attr("execute", "complete")
                .child(Element::new("complete", NS_COMMANDS)),
        );
        c.push(first_form(node));
        return IqReply::Result(Some(c));
    };
    let reply = req.reply_to();
    let done = move |s: &mut Server, now: Instant, r: Result<Element, StanzaError>| {
        s.reply_iq(now, &reply, r.map(Some));
    };
    match node {
        ADD_USER => {
            let jid = match account(s, &requester, f.first("accountjid")) {
                Ok(j) => j,
                Err(e) => return IqReply::Error(e),
            };
            let (Some(p1), Some(p2)) = (f.first("password"), f.first("password-verify")) else {
                return IqReply::Error(
                    StanzaError::new("bad-request").with_text("password required"),
                );
            };
            if p1 != p2 {
                return IqReply::Error(
                    StanzaError::new("bad-request").with_text("passwords do not match"),
                );
            }
            if !register::valid_password(p1) {
                return IqReply::Error(
                    StanzaError::new("not-acceptable").with_text("unacceptable password"),
                );
            }
            s.create_account(now, &jid, p1, move |s, now, r| {
                done(
                    s,
                    now,
                    r.map(|()| completed(node, &sessionid, "User added", None)),
                )
            });
        }
        DELETE_USER => {
            let mut jids = VecDeque::new();
            for j in f.all("accountjids") {
                match account(s, &requester, Some(j)) {
                    Ok(j) => jids.push_back(j),
                    Err(e) => return IqReply::Error(e),
                }
            }
            if jids.is_empty() {
                return IqReply::Error(StanzaError::new("bad-request").with_text("no account"));
            }
            delete_each(
                s,
                now,
                jids,
                Vec::new(),
                Box::new(move |s, now, missing| {
                    let note = if missing.is_empty() {
                        "Users deleted".to_string()
                    } else {
                        format!("No such account: {}", missing.join(", "))
                    };
                    done(s, now, Ok(completed(node, &sessionid, &note, None)))
                }),
            );
        }
        CHANGE_PASSWORD => {
            let jid = match account(s, &requester, f.first("accountjid")) {
                Ok(j) => j,
                Err(e) => return IqReply::Error(e),
            };
            let Some(password) = f.first("password").map(str::to_string) else {
                return IqReply::Error(
                    StanzaError::new("bad-request").with_text("password required"),
                );
            };
            if !register::valid_password(&password) {
                return IqReply::Error(
                    StanzaError::new("not-acceptable").with_text("unacceptable password"),
                );
            }
            let (h, u) = (
                jid.domain().to_string(),
                jid.node().unwrap_or_default().to_string(),
            );
            s.fetch_account_then(&h, &u, move |s, now, existing| {
                match existing {
                    Err(_) => return done(s, now, Err(StanzaError::new("internal-server-error"))),
                    Ok(None) => return done(s, now, Err(StanzaError::new("item-not-found"))),
                    Ok(Some(_)) => {}
                }
                s.set_password(&jid, &password, move |s, now, ok| {
                    let r = if ok {
                        Ok(completed(node, &sessionid, "Password changed", None))
                    } else {
                        Err(StanzaError::new("internal-server-error"))
                    };
                    done(s, now, r)
                });
            });
        }
        _ => {
            // ONLINE_LIST, XEP-0133 section 4.16.
            let max = f
                .first("max_items")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let users = online_users(s, &host);
            let shown: Vec<&str> = users.iter().take(max).map(String::as_str).collect();
            let mut x = form::new_form("result", NS_ADMIN, None);
            x.push(form::field(
                "onlineuserjids",
                "text-multi",
                Some("The list of all online users"),
                &shown,
            ));
            return IqReply::Result(Some(completed(node, &sessionid, "", Some(x))));
        }
    }
    IqReply::Later
}

/// A submitted account JID: bare (a resource is dropped), of a host the requester
/// administers.
fn account(s: &Server, requester: &Jid, value: Option<&str>) -> Result<Jid, StanzaError> {
    let jid = value
        .and_then(|v| Jid::parse(v.trim()).ok())
        .filter(|j| j.node().is_some())
        .map(|j| j.bare())
        .ok_or_else(|| StanzaError::new("jid-malformed"))?;
    if !s.is_local_domain(jid.domain()) {
        return Err(StanzaError::new("not-acceptable").with_text("not a local account"));
    }
    if !admin_of(s, requester, jid.domain()) {
        return Err(StanzaError::new("forbidden"));
    }
    Ok(jid)
}

/// Bare JIDs of `host`'s users with at least one session, sorted.
fn online_users(s: &Server, host: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .users
        .iter()
        .filter(|(j, u)| j.domain() == host && !u.sessions.is_empty())
        .map(|(j, _)| j.to_string())
        .collect();
    v.sort_unstable();
    v
}

type DeleteDone = Box<dyn FnOnce(&mut Server, Instant, Vec<String>) + Send>;

/// Deletes the accounts one after the other; `done` gets those that did not exist.
fn delete_each(
    s: &mut Server,
    now: Instant,
    mut rest: VecDeque<Jid>,
    mut missing: Vec<String>,
    done: DeleteDone,
) {
    let Some(j) = rest.pop_front() else {
        return done(s, now, missing);
    };
    s.delete_account(now, &j.clone(), move |s, now, r| {
        if r.is_err() {
            missing.push(j.to_string());
        }
        delete_each(s, now, rest, missing, done);
    });
}
