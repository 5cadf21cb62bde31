//! `products`: named sets of routes, as APIM's products are. A subscription scoped to a
//! product opens exactly its routes (README: Subscription keys).

use std::collections::{BTreeMap, HashSet};

use serde_saphyr::Spanned;

use super::raw::{ProductConfig, RouteConfig};
use crate::config::context::CompileContext;
use crate::subscription::Products;

/// The products, each with routes that exist.
pub fn compile(
    products: &BTreeMap<String, Spanned<ProductConfig>>,
    routes: &[Spanned<RouteConfig>],
    cx: &mut CompileContext,
) -> Products {
    let names: HashSet<&str> = routes.iter().map(|r| r.value.name.as_str()).collect();
    let mut compiled = Products::new();
    for (name, product) in products {
        if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            cx.error(product.referenced, format!("products.{name}"), "a product name is 1 to 128 visible characters")
                .hint("subscriptions name it as product:NAME");
        }
        if product.value.routes.is_empty() {
            cx.error(product.referenced, format!("products.{name}.routes"), "list the routes the product opens");
        }
        let mut opened = HashSet::new();
        for (i, route) in product.value.routes.iter().enumerate() {
            if !names.contains(route.value.as_str()) {
                cx.error(
                    route.referenced,
                    format!("products.{name}.routes[{i}]"),
                    format!("unknown route {:?}", route.value),
                )
                .hint("name a route of `routes`");
            }
            opened.insert(route.value.clone());
        }
        compiled.insert(name.clone(), opened);
    }
    compiled
}
