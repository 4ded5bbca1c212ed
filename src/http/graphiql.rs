//! GraphiQL at `GET /graphql`, served entirely from the binary: the page, its start-up
//! script and pinned copies of GraphiQL, React and ReactDOM (`assets/graphiql/`, with
//! their versions and checksums). Nothing is loaded from a CDN, so the page works offline
//! and behind a firewall, and its Content-Security-Policy allows scripts from this origin
//! only.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Where the assets are served; the page refers to them under this prefix.
pub const ASSETS: &str = "/graphiql";

/// The page: no inline script, so the policy below can forbid them.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="robots" content="noindex">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Lectern GraphiQL</title>
    <link rel="stylesheet" href="/graphiql/graphiql.min.css">
    <link rel="stylesheet" href="/graphiql/page.css">
  </head>
  <body>
    <div id="graphiql">Loading…</div>
    <script src="/graphiql/react.production.min.js"></script>
    <script src="/graphiql/react-dom.production.min.js"></script>
    <script src="/graphiql/graphiql.min.js"></script>
    <script src="/graphiql/start.js"></script>
  </body>
</html>
"#;

const PAGE_CSS: &str = "body { height: 100%; margin: 0; width: 100%; overflow: hidden; }\n#graphiql { height: 100vh; }\n";

/// Starts GraphiQL against this server's HTTP and WebSocket endpoints.
const START: &str = r#"const url = new URL("/graphql", window.location.origin).toString();
const ws = new URL("/graphql/ws", window.location.origin);
ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher: GraphiQL.createFetcher({ url, subscriptionUrl: ws.toString() }),
    defaultEditorToolsVisibility: true,
  })
);
"#;

/// Scripts and styles from this origin only (GraphiQL sets inline styles and embeds its
/// fonts as data URLs); requests to this origin, WebSocket included.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /graphiql/{file}`: one of the embedded assets, cacheable for a day.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &'static str) = match file.as_str() {
        "graphiql.min.js" => (
            include_bytes!("../../assets/graphiql/graphiql.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "graphiql.min.css" => (
            include_bytes!("../../assets/graphiql/graphiql.min.css"),
            "text/css; charset=utf-8",
        ),
        "react.production.min.js" => (
            include_bytes!("../../assets/graphiql/react.production.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "start.js" => (START.as_bytes(), "text/javascript; charset=utf-8"),
        "page.css" => (PAGE_CSS.as_bytes(), "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        body,
    )
        .into_response()
}
