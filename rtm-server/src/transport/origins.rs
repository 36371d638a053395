//! Which web pages may open a session: the `Origin` a browser sends with a WebSocket upgrade
//! or a WebTransport CONNECT (`docs/operators.md`, "Browsers").

/// The origins a listener accepts.
#[derive(Clone, Debug)]
pub(crate) enum Origins {
    /// Any page (the default on a loopback address, for development).
    Any,
    /// Pages of these origins only (`scheme://host[:port]`, compared without case).
    Only(Vec<String>),
}

impl Origins {
    /// The configured list, or the default for a listener on `addr`: any origin on a loopback
    /// address, none elsewhere. `"*"` in the list allows any.
    pub(crate) fn new(configured: Option<&[String]>, addr: std::net::SocketAddr) -> Self {
        match configured {
            Some(list) if list.iter().any(|o| o == "*") => Self::Any,
            Some(list) => Self::Only(
                list.iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
            ),
            None if addr.ip().is_loopback() => Self::Any,
            None => Self::Only(Vec::new()),
        }
    }

    /// Whether a request with this `Origin` header may go on. A request without one does not
    /// come from a web page (browsers always send it): origins do not concern it.
    pub(crate) fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) | (Self::Any, _) => true,
            (Self::Only(list), Some(origin)) => {
                let origin = origin.trim_end_matches('/');
                list.iter().any(|o| o.eq_ignore_ascii_case(origin))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_allows_any_page_and_other_addresses_none() {
        let local = Origins::new(None, "127.0.0.1:4434".parse().unwrap());
        assert!(local.allows(Some("https://anything.example")));
        let public = Origins::new(None, "0.0.0.0:4434".parse().unwrap());
        assert!(!public.allows(Some("https://anything.example")));
        // Not a browser: no origin to check.
        assert!(public.allows(None));
    }

    #[test]
    fn a_list_allows_exactly_its_origins() {
        let list = vec!["https://App.example.com/".to_owned()];
        let origins = Origins::new(Some(&list), "0.0.0.0:1".parse().unwrap());
        assert!(origins.allows(Some("https://app.example.com")));
        assert!(!origins.allows(Some("https://app.example.com.evil.test")));
        assert!(!origins.allows(Some("http://app.example.com")));
        let any = vec!["*".to_owned()];
        assert!(Origins::new(Some(&any), "0.0.0.0:1".parse().unwrap()).allows(Some("https://x.y")));
    }
}
