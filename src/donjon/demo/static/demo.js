// Donjon demo: refresh the dashboard's live parts every two seconds.
// The server renders every fragment (the charts are SVG); this only swaps them in.
(function () {
  "use strict";
  var source = document.querySelector("[data-live-source]");
  if (!source) {
    return;
  }
  var url = source.getAttribute("data-live-source");

  function refresh() {
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        Object.keys(data.fragments).forEach(function (name) {
          var target = document.querySelector('[data-live="' + name + '"]');
          if (target) {
            target.innerHTML = data.fragments[name];
          }
        });
        source.setAttribute("data-state", "live");
      })
      .catch(function () {
        source.setAttribute("data-state", "offline");
      })
      .finally(function () {
        window.setTimeout(refresh, 2000);
      });
  }

  window.setTimeout(refresh, 2000);
})();
