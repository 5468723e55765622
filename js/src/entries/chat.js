// The anywidget module of Chat (`_esm` of the Python class): pusher-js, the shared styles
// (theme.css, widget.css) and its own front end only, bundled into livewidget/static/chat.js (+ .css).

import Pusher from "pusher-js";
import "../theme.css";
import "../widget.css";
import "../chat.css";
import { initializeChat, renderChat } from "../chat.js";
import { createWidget } from "../widget.js";

export default createWidget({ Pusher }, { chat: { initialize: initializeChat, render: renderChat } });
