//! A compact subset of the Public Suffix List (<https://publicsuffix.org>).
//!
//! A wildcard directly above a public suffix (`*.com`, `**.co.uk`,
//! `*.github.io`) admits names that anyone can register, so such patterns are
//! rejected. Embedding all of the PSL is impractical; instead *every*
//! single-label suffix is treated as public (covering all TLDs, present and
//! future), and this list adds the common multi-label public suffixes:
//! country second levels and the shared hosting platforms where anyone can get
//! a subdomain. It is a deliberately small subset, not the whole list.

/// Multi-label public suffixes, lowercase, without leading or trailing dots.
const MULTI_LABEL: &[&str] = &[
    // Country-code second levels.
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "me.uk",
    "net.uk",
    "ltd.uk",
    "plc.uk",
    "nhs.uk",
    "com.au",
    "net.au",
    "org.au",
    "edu.au",
    "gov.au",
    "id.au",
    "co.jp",
    "ne.jp",
    "or.jp",
    "ac.jp",
    "go.jp",
    "co.nz",
    "net.nz",
    "org.nz",
    "com.br",
    "net.br",
    "org.br",
    "com.cn",
    "net.cn",
    "org.cn",
    "co.in",
    "net.in",
    "org.in",
    "firm.in",
    "co.za",
    "org.za",
    "com.mx",
    "org.mx",
    "co.kr",
    "or.kr",
    "com.sg",
    "com.hk",
    "com.tw",
    "com.tr",
    "com.ar",
    "co.il",
    "com.ua",
    // Shared hosting and tunnelling platforms: anyone can get a subdomain.
    "github.io",
    "githubusercontent.com",
    "gitlab.io",
    "pages.dev",
    "workers.dev",
    "vercel.app",
    "netlify.app",
    "herokuapp.com",
    "appspot.com",
    "cloudfront.net",
    "azurewebsites.net",
    "azureedge.net",
    "blob.core.windows.net",
    "web.core.windows.net",
    "cloudapp.net",
    "amazonaws.com",
    "s3.amazonaws.com",
    "compute.amazonaws.com",
    "elasticbeanstalk.com",
    "awsapprunner.com",
    "firebaseapp.com",
    "web.app",
    "blogspot.com",
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "trycloudflare.com",
    "duckdns.org",
    "no-ip.org",
    "dyndns.org",
    "glitch.me",
    "repl.co",
    "onrender.com",
    "fly.dev",
    "run.app",
    "deno.dev",
    "surge.sh",
    "readthedocs.io",
];

/// Whether `suffix` (lowercase, no trailing dot) is a public suffix: any
/// single label, or one of the embedded multi-label suffixes.
pub fn is_public_suffix(suffix: &str) -> bool {
    !suffix.contains('.') || MULTI_LABEL.contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_labels_are_public() {
        assert!(is_public_suffix("com"));
        assert!(is_public_suffix("anything"));
    }

    #[test]
    fn listed_multi_labels_are_public() {
        for s in ["co.uk", "github.io", "s3.amazonaws.com", "blob.core.windows.net"] {
            assert!(is_public_suffix(s), "{s}");
        }
    }

    #[test]
    fn ordinary_domains_are_not() {
        for s in ["example.com", "openai.azure.com", "dkr.ecr.us-east-1.amazonaws.com"] {
            assert!(!is_public_suffix(s), "{s}");
        }
    }

    #[test]
    fn list_is_normalised() {
        for s in MULTI_LABEL {
            assert_eq!(*s, s.to_ascii_lowercase());
            assert!(s.contains('.') && !s.starts_with('.') && !s.ends_with('.'), "{s}");
        }
    }
}
