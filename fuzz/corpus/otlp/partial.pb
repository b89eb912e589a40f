
a


service.name	
billingB	ÍuË¿Ÿ|*
kept*	
no time 	ÍuË¿Ÿ|2
log.record.uid
 