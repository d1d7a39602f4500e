// keystile key dashboard: enhancements only; every page works without this file.
(function () {
  "use strict";

  // Copy: the button is hidden until this script runs (without it, select the field).
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById(button.getAttribute("data-status"));
    if (!field) return;
    button.hidden = false;
    function done() {
      button.textContent = "Copied";
      if (status) status.textContent = "Copied to the clipboard.";
    }
    function fallback() {
      field.focus();
      field.select();
      try {
        if (document.execCommand("copy")) done();
      } catch (e) { /* the field stays selected: copy by hand */ }
    }
    button.addEventListener("click", function () {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, fallback);
      } else {
        fallback();
      }
    });
  });

  // The whole key is selected on focus, so a copy by hand takes all of it.
  document.querySelectorAll("input.secret").forEach(function (field) {
    field.addEventListener("focus", function () { field.select(); });
  });

  // Custom permissions are shown only when Permissions is Custom.
  document.querySelectorAll("select[data-custom]").forEach(function (select) {
    var box = document.getElementById(select.getAttribute("data-custom"));
    if (!box) return;
    function sync() { box.hidden = select.value !== "custom"; }
    select.addEventListener("change", sync);
    sync();
  });

  // A confirmation before an action that breaks a working key.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // One submit per form: a double click must not send it twice.
  document.querySelectorAll("form[method='post']").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (event.defaultPrevented) return;
      var button = form.querySelector("button[type='submit']");
      if (button) window.setTimeout(function () { button.disabled = true; }, 0);
    });
  });
})();
