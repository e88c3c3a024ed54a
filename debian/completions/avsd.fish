complete -c avsd -l config -d 'Config file to read' -r -F
complete -c avsd -l check-config -d 'Check the config file, print a summary and exit (1 if it has problems)'
complete -c avsd -s h -l help -d 'Print help (see more with \'--help\')'
complete -c avsd -s V -l version -d 'Print version'
