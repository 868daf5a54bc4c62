//! Programming the Redis routing table the way the operator does, for tests that run
//! edges on Redis without a Kubernetes API.

use std::time::{Duration, Instant};

use switchyard_routing::{
    AppUrl, HttpMethod, Owner, RedisAuth, RedisRoutes, RedisTarget, Route, RouteKey, RouteWriter,
};

/// The route a PhoneNumber `telephony/<number>` declares: `voiceUrl` and an optional
/// `referUrl`, both POST.
pub fn number_route(number: &str, voice_url: &str, refer_url: Option<&str>) -> Route {
    let app = |url: &str| AppUrl {
        url: url.to_owned(),
        method: HttpMethod::Post,
    };
    Route {
        key: RouteKey::Number(number.to_owned()),
        owner: Owner(format!("telephony/{number}")),
        priority: 0,
        friendly_name: None,
        voice: app(voice_url),
        voice_fallback: None,
        refer: refer_url.map(app),
        status_callback: None,
        refer_target_allow: Vec::new(),
    }
}

/// The routing table in the Redis `url` names (a server, a cluster or Sentinel).
pub fn table(url: &str) -> RedisRoutes {
    let target = RedisTarget::parse(url, &RedisAuth::default()).expect("a valid Redis URL");
    RedisRoutes::new(target).expect("a routing table client")
}

/// Replaces the routing table in the Redis at `url` with `routes`, retrying (bounded)
/// while Redis is coming back, as the operator does.
pub fn program(url: &str, routes: &[Route]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the Redis client");
    runtime.block_on(async {
        let table = table(url);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(error) = table.replace_all(routes).await {
            assert!(
                Instant::now() < deadline,
                "cannot program the routes: {error}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
