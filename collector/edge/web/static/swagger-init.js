// Starts Swagger UI on the collector's own OpenAPI document (a file, not an inline
// script, so the strict Content-Security-Policy holds on /docs too).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
});
