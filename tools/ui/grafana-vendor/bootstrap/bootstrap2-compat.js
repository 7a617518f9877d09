// Appended to Bootstrap 3's bootstrap.js by grafana-vendor.sh (ours): the
// Bootstrap 2.3.2 names Grafana's Angular code uses that Bootstrap 3 spells
// differently (AngularApp.ts sets $.fn.tooltip.defaults.animation at boot).
(function ($) {
  'use strict';
  $.each(['tooltip', 'popover'], function (_, name) {
    if ($.fn[name] && !$.fn[name].defaults) {
      $.fn[name].defaults = $.fn[name].Constructor.DEFAULTS;
    }
  });
})(jQuery);
