// Draws every chart of the page from the figure JSON embedded beside it (no requests).
(function () {
  "use strict";
  var config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud"] };
  document.querySelectorAll("[data-figure]").forEach(function (element) {
    var source = document.getElementById(element.getAttribute("data-figure"));
    if (!source) { return; }
    var figure = JSON.parse(source.textContent);
    // The figure's title is the caption above the chart; don't draw it twice.
    figure.layout.title = { text: "" };
    window.Plotly.newPlot(element, figure.data, figure.layout, config);
  });
})();
