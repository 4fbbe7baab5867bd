// Swagger UI for /docs, started from a file (the Content-Security-Policy allows no inline script).
// The swagger-ui-bundle package ships Swagger UI 4, which renders OpenAPI 3.0 documents only: it is
// handed the 3.1 document (openapi.json, the one source) with its version field read as 3.0.3. The
// document uses nothing 3.0 readers cannot show, beyond `type: [x, "null"]` (shown as its first type).
(function () {
  "use strict";
  fetch("openapi.json", { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("openapi.json: HTTP " + response.status);
      return response.json();
    })
    .then(function (spec) {
      spec.openapi = "3.0.3";
      window.ui = window.SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [window.SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
      });
    })
    .catch(function (error) {
      var box = document.getElementById("swagger-ui");
      box.textContent = "The API document could not be loaded (" + error.message + "): see openapi.json.";
    });
})();
