// Optional comforts of the setup wizard; every page works without this file.
"use strict";
document.documentElement.classList.add("js");

// Show only the sub-fields of the chosen option (data-when="name=value").
function toggleSubs() {
  document.querySelectorAll(".sub[data-when]").forEach(function (sub) {
    var parts = sub.getAttribute("data-when").split("=");
    var chosen = document.querySelector('input[name="' + parts[0] + '"]:checked');
    sub.classList.toggle("hidden", !!chosen && chosen.value !== parts[1]);
  });
}
document.addEventListener("change", toggleSubs);
document.addEventListener("DOMContentLoaded", toggleSubs);

// Live DNS check of the host name.
document.addEventListener("DOMContentLoaded", function () {
  var host = document.getElementById("host");
  var result = document.getElementById("dns-result");
  if (host && result) {
    var timer;
    host.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        if (!host.value.trim()) return;
        fetch("/setup/dns?host=" + encodeURIComponent(host.value.trim()), { credentials: "same-origin" })
          .then(function (r) { return r.json(); })
          .then(function (answer) {
            var line = result.querySelector("p.ok, p.warning") || document.createElement("p");
            line.className = answer.ok ? "ok" : "warning";
            line.textContent = answer.text;
            if (!line.parentNode) result.insertBefore(line, result.firstChild);
          })
          .catch(function () {});
      }, 600);
    });
  }

  // A rough strength hint while typing; the server makes the real check.
  var password = document.getElementById("admin_password");
  var hint = document.getElementById("strength");
  if (password && hint) {
    password.addEventListener("input", function () {
      var p = password.value, kinds = 0;
      [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].forEach(function (re) { if (re.test(p)) kinds++; });
      var score = p.length >= 16 ? 3 : p.length >= 10 && kinds >= 3 ? 2 : p.length >= 8 ? 1 : 0;
      hint.textContent = ["✗", "✗ ✓", "✓ ✓", "✓ ✓ ✓"][score];
    });
  }
});
