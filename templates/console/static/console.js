// aiaas console: optional enhancements only; every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  // Remember the browser's time zone so the server renders times in it.
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz && document.cookie.indexOf("aiaas_tz=" + tz) === -1) {
      document.cookie = "aiaas_tz=" + tz + "; path=/admin; max-age=31536000; samesite=strict";
    }
  } catch (e) { /* keep UTC */ }
  document.addEventListener("DOMContentLoaded", function () {
    // Copy buttons: data-copy="#selector".
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = document.querySelector(button.getAttribute("data-copy"));
        if (!field) return;
        var done = function () {
          var label = button.textContent;
          button.textContent = button.getAttribute("data-copied") || "Copied";
          setTimeout(function () { button.textContent = label; }, 2000);
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(field.value).then(done, function () { field.select(); document.execCommand("copy"); done(); });
        } else {
          field.select(); document.execCommand("copy"); done();
        }
      });
    });
    document.querySelectorAll("[data-select-all]").forEach(function (field) {
      field.addEventListener("focus", function () { field.select(); });
    });
    // Selects that apply themselves.
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  });
})();
