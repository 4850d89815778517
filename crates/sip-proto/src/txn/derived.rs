//! Requests the transaction layer builds itself from an INVITE it sent: the ACK for a
//! non-2xx final response (RFC 3261 section 17.1.1.3) and the CANCEL (section 9.1, used by
//! proxies per section 16.10). Both reuse the INVITE's top Via, branch included, so no
//! random number is needed and the downstream server matches them to the INVITE.

use crate::message::{Header, HeaderName, Message, Method, StartLine};
use crate::uri::Uri;

/// What an INVITE client transaction keeps of its request to build ACK and CANCEL.
#[derive(Debug, Clone)]
pub(super) struct InviteInfo {
    uri: Uri,
    /// The INVITE's top Via value, verbatim.
    via: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
    /// Route header lines, verbatim and in order.
    routes: Vec<String>,
    max_forwards: Option<String>,
}

impl InviteInfo {
    /// Extracts the fields from an INVITE about to be sent. Missing fields (which a
    /// request built by the proxy core never lacks) become empty.
    pub(super) fn of(invite: &Message) -> InviteInfo {
        let text = |name: HeaderName| invite.header(&name).unwrap_or("").to_string();
        InviteInfo {
            uri: invite.uri().cloned().unwrap_or_else(|| Uri::Other {
                scheme: "sip".into(),
                rest: String::new(),
            }),
            via: invite
                .values(&HeaderName::Via)
                .into_iter()
                .next()
                .unwrap_or_default(),
            from: text(HeaderName::From),
            to: text(HeaderName::To),
            call_id: text(HeaderName::CallId),
            cseq: invite.cseq().map_or(0, |c| c.seq),
            routes: invite
                .headers
                .iter()
                .filter(|h| h.name == HeaderName::Route)
                .map(|h| h.value.clone())
                .collect(),
            max_forwards: invite.header(&HeaderName::MaxForwards).map(str::to_string),
        }
    }

    /// The ACK for the non-2xx final `response` (17.1.1.3): same Request-URI, Call-ID,
    /// From and CSeq number as the INVITE, To from the response (with its tag), CSeq
    /// method ACK, a single Via equal to the INVITE's top Via, the INVITE's Route headers.
    pub(super) fn ack(&self, response: &Message) -> Message {
        let to = response.header(&HeaderName::To).unwrap_or(&self.to);
        self.build(Method::Ack, to)
    }

    /// The CANCEL of the INVITE (9.1): Request-URI, Call-ID, From, To and CSeq number
    /// of the INVITE, CSeq method CANCEL, a single Via equal to the INVITE's top Via, the
    /// INVITE's Route headers. No Require or Proxy-Require.
    pub(super) fn cancel(&self) -> Message {
        self.build(Method::Cancel, &self.to)
    }

    fn build(&self, method: Method, to: &str) -> Message {
        let mut headers = Vec::with_capacity(6 + self.routes.len());
        let mut push = |name: HeaderName, value: String| headers.push(Header { name, value });
        push(HeaderName::Via, self.via.clone());
        for route in &self.routes {
            push(HeaderName::Route, route.clone());
        }
        // Section 8.1.1.6: every request carries Max-Forwards; the INVITE's value, which
        // the proxy already decremented, is the right one for requests on its path.
        push(
            HeaderName::MaxForwards,
            self.max_forwards.clone().unwrap_or_else(|| "70".into()),
        );
        push(HeaderName::From, self.from.clone());
        push(HeaderName::To, to.to_string());
        push(HeaderName::CallId, self.call_id.clone());
        push(
            HeaderName::CSeq,
            format!("{} {}", self.cseq, method.as_str()),
        );
        Message {
            start: StartLine::Request {
                method,
                uri: self.uri.clone(),
            },
            headers,
            body: Vec::new(),
        }
    }
}
