// /docs: Swagger UI over the gateway's OpenAPI document, from the vendored swagger-ui-dist.
window.ui = window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
