// /docs: Swagger UI over the gateway's OpenAPI document, from the vendored swagger-ui-dist.
const root = document.getElementById("swagger-ui");
window.ui = window.SwaggerUIBundle({ url: root.dataset.openapi, dom_id: "#swagger-ui" });
