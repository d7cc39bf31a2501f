// Progressive enhancement of the experiment editor: show only the chosen explorer's
// explanation and parameters, and move focus to the error summary. The form works without it.
(function () {
  "use strict";
  var select = document.querySelector(".explorer-select");
  function sync() {
    if (!select) { return; }
    document.querySelectorAll(".explorer-option").forEach(function (option) {
      option.hidden = option.getAttribute("data-explorer") !== select.value;
    });
  }
  if (select) {
    select.addEventListener("change", sync);
    sync();
  }
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
})();
