# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_avsctl_global_optspecs
    string join \n h/help V/version
end

function __fish_avsctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_avsctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_avsctl_using_subcommand
    set -l cmd (__fish_avsctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c avsctl -n "__fish_avsctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c avsctl -n "__fish_avsctl_needs_command" -s V -l version -d 'Print version'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "status" -d 'Show authorization and dialog state; while waiting for a login, the URL, the code and a QR code of the URL'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "show" -d 'Every property of avsd as Interface.Property=value lines, for scripts (like `timedatectl show`)'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "watch" -d 'Print each change of avsd\'s state as Interface.Property=value lines until Ctrl-C'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "login" -d 'Start linking this device with Amazon and wait until it is done'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "reset" -d 'Forget the session and tokens'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "tap" -d 'Tap to talk: listen until Alexa decides you have finished'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "hold" -d 'Start listening until `avsctl release`'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "release" -d 'Stop listening after `avsctl hold`'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "stop" -d 'Stop listening or speaking now, and silence a ringing alert'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "volume" -d 'Show the volume, or set it: N (0 to 100), +N or -N'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "mute" -d 'Mute the speaker'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "unmute" -d 'Unmute the speaker'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "play" -d 'Ask Alexa to play or resume the music (a media button)'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "pause" -d 'Ask Alexa to pause the music'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "next" -d 'Ask Alexa for the next track'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "previous" -d 'Ask Alexa for the previous track'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "alerts" -d 'List the timers, alarms and reminders set, and which one rings'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "mic" -d 'Turn the microphone on, or off (the privacy switch: no capture at all, talk refused); it stays so across restarts'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "wakeword" -d 'Listen for "Alexa" while idle, or stop; it stays so across restarts (until `wakeword.enabled` in avsd.toml is changed)'
complete -c avsctl -n "__fish_avsctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c avsctl -n "__fish_avsctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand show" -s p -l property -d 'Only this property (Dialog.State, or State for all interfaces that have one); may be repeated' -r
complete -c avsctl -n "__fish_avsctl_using_subcommand show" -l value -d 'Print the values only, without `Interface.Property=`'
complete -c avsctl -n "__fish_avsctl_using_subcommand show" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand watch" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand login" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand reset" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand tap" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand hold" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand release" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand volume" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand mute" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand unmute" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand play" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand pause" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand next" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand previous" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand alerts" -s h -l help -d 'Print help'
complete -c avsctl -n "__fish_avsctl_using_subcommand mic" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c avsctl -n "__fish_avsctl_using_subcommand wakeword" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "status" -d 'Show authorization and dialog state; while waiting for a login, the URL, the code and a QR code of the URL'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "show" -d 'Every property of avsd as Interface.Property=value lines, for scripts (like `timedatectl show`)'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "watch" -d 'Print each change of avsd\'s state as Interface.Property=value lines until Ctrl-C'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "login" -d 'Start linking this device with Amazon and wait until it is done'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "reset" -d 'Forget the session and tokens'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "tap" -d 'Tap to talk: listen until Alexa decides you have finished'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "hold" -d 'Start listening until `avsctl release`'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "release" -d 'Stop listening after `avsctl hold`'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "stop" -d 'Stop listening or speaking now, and silence a ringing alert'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "volume" -d 'Show the volume, or set it: N (0 to 100), +N or -N'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "mute" -d 'Mute the speaker'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "unmute" -d 'Unmute the speaker'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "play" -d 'Ask Alexa to play or resume the music (a media button)'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "pause" -d 'Ask Alexa to pause the music'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "next" -d 'Ask Alexa for the next track'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "previous" -d 'Ask Alexa for the previous track'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "alerts" -d 'List the timers, alarms and reminders set, and which one rings'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "mic" -d 'Turn the microphone on, or off (the privacy switch: no capture at all, talk refused); it stays so across restarts'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "wakeword" -d 'Listen for "Alexa" while idle, or stop; it stays so across restarts (until `wakeword.enabled` in avsd.toml is changed)'
complete -c avsctl -n "__fish_avsctl_using_subcommand help; and not __fish_seen_subcommand_from status show watch login reset tap hold release stop volume mute unmute play pause next previous alerts mic wakeword help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
