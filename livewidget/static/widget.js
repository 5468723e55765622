export default { render({ el }) { el.textContent = "livewidget: front end not built"; } };
