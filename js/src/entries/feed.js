// The anywidget module of Feed (`_esm` of the Python class): pusher-js, the shared styles
// (theme.css, widget.css) and its own front end only, bundled into livewidget/static/feed.js (+ .css).

import Pusher from "pusher-js";
import "../theme.css";
import "../widget.css";
import "../feed.css";
import { initializeFeed, renderFeed } from "../feed.js";
import { createWidget } from "../widget.js";

export default createWidget({ Pusher }, { feed: { initialize: initializeFeed, render: renderFeed } });
