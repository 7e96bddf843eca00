(function(){
  function mark(row, on){
    var section = row.closest('section');
    if(!section){return;}
    var ids = (row.getAttribute('data-members')||'').split(',');
    var nodes = section.querySelectorAll('[data-i]');
    for(var k=0;k<nodes.length;k++){
      var hit = on && ids.indexOf(nodes[k].getAttribute('data-i')) >= 0;
      if(hit){nodes[k].classList.add('hl');}else{nodes[k].classList.remove('hl');}
    }
  }
  var rows = document.querySelectorAll('[data-members]');  // table rows, and the context lens's links
  for(var i=0;i<rows.length;i++){
    rows[i].addEventListener('mouseenter', function(){mark(this, true);});
    rows[i].addEventListener('mouseleave', function(){mark(this, false);});
  }
})();
