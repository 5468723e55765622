// The anywidget module of LiveChart (`_esm` of the Python class): pusher-js, the shared styles
// (theme.css, widget.css) and its own front end only, bundled into livewidget/static/chart.js (+ .css).

import Pusher from "pusher-js";
import "../theme.css";
import "../widget.css";
import "../chart.css";
import { initializeChart, renderChart } from "../chart.js";
import { createWidget } from "../widget.js";

export default createWidget({ Pusher }, { chart: { initialize: initializeChart, render: renderChart } });
