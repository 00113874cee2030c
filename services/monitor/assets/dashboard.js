// Kiln dashboard: draws the version page's charts with uPlot from the JSON the monitor embeds
// in <script id="series-data">. No network access beyond the monitor itself.
(function () {
  "use strict";
  var data = document.getElementById("series-data");
  if (!data || typeof uPlot === "undefined") {
    return;
  }
  var d = JSON.parse(data.textContent);
  // Show at least 12 windows of history, so that a young series is not stretched over years.
  var w = d.window_s || 10;
  var last = d.t.length ? d.t[d.t.length - 1] : Date.now() / 1000;
  var first = d.t.length ? d.t[0] : last;
  var xRange = [Math.min(first, last - 12 * w) - w / 2, last + w];
  function width(el) {
    return Math.max(320, Math.min(el.clientWidth || 1200, 1600));
  }
  function draw(id, series, columns) {
    var el = document.getElementById(id);
    if (!el) {
      return;
    }
    var opts = {
      width: width(el),
      height: 240,
      scales: {
        x: { time: true, range: function () { return xRange; } },
        y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } },
      },
      series: [{}].concat(series),
      axes: [{}, { size: 60 }],
      legend: { live: false },
    };
    new uPlot(opts, [d.t].concat(columns), el);
    el.setAttribute("data-drawn", "true");
  }
  function line(label, stroke, unit) {
    return {
      label: label,
      stroke: stroke,
      width: 2,
      points: { show: true, size: 5 },
      value: function (u, v) {
        return v == null ? "–" : v.toFixed(2) + " " + unit;
      },
    };
  }
  draw(
    "latency-chart",
    [line("p50", "#2f6fdb", "ms"), line("p90", "#e8833a", "ms"), line("p99", "#c0392b", "ms")],
    [d.p50, d.p90, d.p99]
  );
  draw(
    "throughput-chart",
    [line("requests/s", "#3aa676", "/s"), line("errors/s", "#c0392b", "/s")],
    [d.rps, d.eps]
  );
})();
